"""Read NYC TLC green/yellow trip files (parquet, csv, csv.gz) as :class:`TripEvent` streams.

The file kind is decided by extension, the taxi type by columns (``lpep_*`` = green,
``tpep_*`` = yellow), so a renamed file still reads correctly and a foreign file fails fast with
one line naming it. Rows that cannot become events are returned as :class:`Reject` rather than
raised: real TLC months contain such rows and a replay must not die halfway through.

Conversion is column-wise with pyarrow (vectorised casts, one ``to_pylist`` per column per batch);
only string-typed columns (CSV, odd parquet) fall back to per-value Python parsing, which is what
lets us report *which* row and value was bad.
"""

from __future__ import annotations

import csv
import gzip
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tripstream.events.errors import EventsError, UnknownFormatError, UnreadableFileError
from tripstream.events.schema import (
    FIELDS,
    TripEvent,
    field_kind,
    format_epoch_seconds,
    format_epoch_seconds_many,
    make_event_id,
    wall_clock_ms,
)

Order = Literal["file", "event-time"]
BATCH_ROWS = 65_536

# Source column (lower-case, "{p}" = lpep/tpep) per event field; event_id/taxi_type are ours.
_SOURCE_COLUMNS: dict[str, str] = {
    "vendor_id": "vendorid",
    "pickup_at": "{p}_pickup_datetime",
    "dropoff_at": "{p}_dropoff_datetime",
    "pu_location_id": "pulocationid",
    "do_location_id": "dolocationid",
    "passenger_count": "passenger_count",
    "trip_distance": "trip_distance",
    "ratecode_id": "ratecodeid",
    "store_and_fwd_flag": "store_and_fwd_flag",
    "payment_type": "payment_type",
    "trip_type": "trip_type",
    "fare_amount": "fare_amount",
    "extra": "extra",
    "mta_tax": "mta_tax",
    "tip_amount": "tip_amount",
    "tolls_amount": "tolls_amount",
    "improvement_surcharge": "improvement_surcharge",
    "congestion_surcharge": "congestion_surcharge",
    "total_amount": "total_amount",
}
_PREFIX = {"green": "lpep", "yellow": "tpep"}
_EXTENSIONS: tuple[tuple[str, str], ...] = (
    (".csv.gz", "csv"),
    (".parquet", "parquet"),
    (".parq", "parquet"),
    (".pq", "parquet"),
    (".csv", "csv"),
)
# Accepted string timestamp layouts besides ISO (older TLC CSV exports use US style).
_EXTRA_TS_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M")


@dataclass(frozen=True, slots=True)
class Reject:
    """A source row that could not become an event: where it was, why, and what it held."""

    row_index: int
    reason: str
    raw: dict[str, Any] = field(default_factory=dict)


class Columns:
    """One converted batch of a file: each event field as a column of Python values.

    Nothing per row is built yet: :meth:`timed_items` makes a :class:`TripEvent` per row, the
    bulk encoder makes Kafka records straight from the columns. ``errors`` marks the rows that
    cannot be events (position -> reason); :meth:`select` keeps the rows a read asked for.
    """

    __slots__ = ("tag", "taxi_type", "batch", "rows", "values", "pickup_seconds", "errors", "positions",
                 "event_count")

    def __init__(self, tag: str, taxi_type: str, batch: pa.RecordBatch | pa.Table, rows: Sequence[int],
                 values: list[list[Any]], pickup_seconds: list[int | None], errors: dict[int, str]) -> None:
        self.tag = tag
        self.taxi_type = taxi_type
        self.batch = batch
        self.rows = rows  # the source row index of each position (it feeds the event id)
        self.values = values  # per field of FIELDS[2:], a list over the batch's positions
        self.pickup_seconds = pickup_seconds
        self.errors = errors
        # The positions kept, in order (rejects and events); None: every position.
        self.positions: list[int] | None = None
        self.event_count = len(batch) - len(errors)

    def select(self, lo: int | None, hi: int | None, limit: int | None) -> None:
        """Keep events with a pickup in ``[lo, hi)`` and every reject, up to ``limit`` events.

        A reject is kept whatever its pickup (a bad row has no trustworthy time); the batch ends
        right after the ``limit``-th event.
        """
        if lo is None and hi is None and (limit is None or limit >= self.event_count):
            return
        kept: list[int] = []
        events = 0
        errors, seconds = self.errors, self.pickup_seconds
        for i in range(len(self.batch)):
            if i not in errors:
                s = seconds[i]
                if s is None or (lo is not None and s < lo) or (hi is not None and s >= hi):
                    continue
                events += 1
            kept.append(i)
            if limit is not None and events >= limit:
                break
        self.positions = kept
        self.event_count = events

    def kept(self) -> Iterable[int]:
        return range(len(self.batch)) if self.positions is None else self.positions

    def reject(self, i: int) -> Reject:
        return Reject(self.rows[i], self.errors[i], _raw_row(self.batch, i))

    def timed_items(self) -> Iterator[tuple[int | None, TripEvent | Reject]]:
        """Each kept row in order: ``(pickup epoch ms, event)``, or ``(None, reject)``."""
        tag, taxi_type, rows, errors, seconds = self.tag, self.taxi_type, self.rows, self.errors, self.pickup_seconds
        by_row = list(zip(*self.values))
        for i in self.kept():
            if i in errors:
                yield None, self.reject(i)
                continue
            values = by_row[i]
            event_id = make_event_id(tag, rows[i], taxi_type, *values)
            yield seconds[i] * 1000, TripEvent(event_id, taxi_type, *values)  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------
# Column converters: Arrow array -> (python values, {row offset: error}).
# ---------------------------------------------------------------------------------------------

Converted = tuple[list[Any], dict[int, str]]


def _parse_loop(values: list[Any], parse: Callable[[Any], Any], label: str) -> Converted:
    out: list[Any] = []
    errors: dict[int, str] = {}
    append = out.append
    for i, value in enumerate(values):
        if value is None:
            append(None)
            continue
        try:
            append(parse(value))
        except (ValueError, TypeError, OverflowError):
            append(None)
            errors[i] = f"unparseable {label}: {value!r}"
    return out, errors


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _py_float(value: Any) -> float | None:
    value = _blank_to_none(value)
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("bool")
    number = float(value)
    return number if math.isfinite(number) else None


def _py_int(value: Any) -> int | None:
    value = _blank_to_none(value)
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("bool")
    if isinstance(value, int):
        return _int64(value)
    if isinstance(value, str):
        try:
            return _int64(int(value))
        except ValueError:
            pass
    number = float(value)
    if not math.isfinite(number):
        return None
    if not number.is_integer():
        raise ValueError("not a whole number")
    return _int64(int(number))


def _int64(value: int) -> int:
    """The value, if a 64-bit integer holds it (JSON and Avro writers, and Parquet, stop there)."""
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError("out of the 64-bit range")
    return value


def _py_datetime(value: Any) -> datetime | None:
    value = _blank_to_none(value)
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            for fmt in _EXTRA_TS_FORMATS:
                try:
                    parsed = datetime.strptime(value, fmt)
                    break
                except ValueError:
                    continue
            else:
                raise
    else:
        raise TypeError(type(value).__name__)
    if parsed.tzinfo is not None:
        raise ValueError("zone-aware timestamp")
    return parsed.replace(microsecond=0)


def _numeric_list(arr: pa.Array, keep: pa.Array | None = None) -> list[Any]:
    """Numeric Arrow array -> list with None where null (or where ``keep`` is false).

    Goes through numpy because ``Array.to_pylist`` builds a scalar object per value and is
    several times slower on a 56k-row batch.
    """
    mask = arr.is_valid() if keep is None else pc.fill_null(keep, False)
    values = arr.fill_null(0).to_numpy(zero_copy_only=False).tolist()
    if mask.false_count == 0:
        return values
    return [v if ok else None for v, ok in zip(values, mask.to_numpy(zero_copy_only=False).tolist())]


def _try_cast(arr: pa.Array, target: pa.DataType) -> pa.Array | None:
    """Vectorised parse of a string column; None if any value needs the per-value path."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return None
    try:
        return pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _convert_float(arr: pa.Array, label: str) -> Converted:
    cast = _try_cast(arr, pa.float64())
    arr = arr if cast is None else cast
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type):
        as_float = pc.cast(arr, pa.float64())
        return _numeric_list(as_float, pc.is_finite(as_float)), {}
    if pa.types.is_null(arr.type):
        return [None] * len(arr), {}
    return _parse_loop(arr.to_pylist(), _py_float, label)


def _convert_int(arr: pa.Array, label: str) -> Converted:
    cast = _try_cast(arr, pa.int64())
    arr = arr if cast is None else cast
    if pa.types.is_integer(arr.type):
        return _numeric_list(arr), {}
    if pa.types.is_null(arr.type):
        return [None] * len(arr), {}
    return _parse_loop(arr.to_pylist(), _py_int, label)


def _convert_str(arr: pa.Array, label: str) -> Converted:
    if pa.types.is_null(arr.type):
        return [None] * len(arr), {}
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        # Few distinct values (Y/N flags): convert each once, then map the codes.
        encoded = pc.dictionary_encode(arr)
        distinct = [_blank_to_none(v) for v in encoded.dictionary.to_pylist()] + [None]
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).tolist()
        return [distinct[code] for code in codes], {}
    return _parse_loop(arr.to_pylist(), lambda v: _blank_to_none(str(v)), label)


def _convert_timestamp(arr: pa.Array, label: str) -> tuple[list[str | None], list[int | None], dict[int, str]]:
    """Timestamps as ('YYYY-MM-DD HH:MM:SS' strings, wall-clock epoch seconds, errors)."""
    cast = _try_cast(arr, pa.timestamp("us"))
    arr = arr if cast is None else cast
    if pa.types.is_timestamp(arr.type):
        if arr.type.tz is not None:  # an instant: show it as the zone's wall-clock
            arr = pc.local_timestamp(arr)
        seconds = pc.cast(pc.cast(arr, pa.timestamp("s"), safe=False), pa.int64())
        texts = format_epoch_seconds_many(seconds.fill_null(0).to_numpy(zero_copy_only=False))
        if seconds.null_count == 0:
            return texts, seconds.to_numpy(zero_copy_only=False).tolist(), {}
        secs = _numeric_list(seconds)
        return [None if v is None else t for t, v in zip(texts, secs)], secs, {}
    if pa.types.is_null(arr.type):
        empty: list[Any] = [None] * len(arr)
        return empty, list(empty), {}
    parsed, errors = _parse_loop(arr.to_pylist(), _py_datetime, label)
    secs = [None if d is None else wall_clock_ms(d) // 1000 for d in parsed]
    return [None if v is None else format_epoch_seconds(v) for v in secs], secs, errors


# ---------------------------------------------------------------------------------------------
# Format / taxi type detection.
# ---------------------------------------------------------------------------------------------


def _file_kind(path: Path) -> tuple[str, str]:
    name = path.name.lower()
    for suffix, kind in _EXTENSIONS:
        if name.endswith(suffix):
            return kind, path.name[: -len(suffix)]
    raise UnknownFormatError(
        f"{path}: unsupported file type (expected .parquet, .csv or .csv.gz)"
    )


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:  # type: ignore[operator]
            header = next(csv.reader(handle), None)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise UnreadableFileError(f"{path}: cannot read CSV header ({exc})") from None
    if not header:
        raise UnreadableFileError(f"{path}: empty CSV file (no header line)")
    return [name.strip() for name in header]


def _detect_taxi_type(path: Path, columns: Sequence[str]) -> str:
    lower = {c.lower() for c in columns}
    found = [t for t, p in _PREFIX.items() if f"{p}_pickup_datetime" in lower]
    if not found:
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        raise UnknownFormatError(
            f"{path}: not a green/yellow TLC trip file: no lpep_pickup_datetime or "
            f"tpep_pickup_datetime column (columns: {shown or 'none'})"
        )
    if len(found) > 1:
        raise UnknownFormatError(f"{path}: has both lpep_* (green) and tpep_* (yellow) pickup columns")
    if "pulocationid" not in lower:
        raise UnknownFormatError(f"{path}: {found[0]} trip file without a PULocationID column")
    return found[0]


class TripSource:
    """An opened TLC trip file. Iterate it for events; see :meth:`records` for rejects too.

    Cheap to create (reads only the schema/header) and re-iterable: every call re-reads the file,
    so two passes yield identical events and ids.
    """

    def __init__(self, path: Path, kind: str, taxi_type: str, columns: Sequence[str], source_tag: str):
        self.path = path
        self.format = kind
        self.taxi_type = taxi_type
        self.columns: tuple[str, ...] = tuple(columns)
        self.source_tag = source_tag
        by_lower = {c.lower(): c for c in columns}
        prefix = _PREFIX[taxi_type]
        self.column_map: dict[str, str | None] = {
            name: by_lower.get(pattern.format(p=prefix)) for name, pattern in _SOURCE_COLUMNS.items()
        }
        self._count: int | None = None

    def __repr__(self) -> str:
        return f"TripSource({str(self.path)!r}, format={self.format!r}, taxi_type={self.taxi_type!r})"

    # -- counting ---------------------------------------------------------------------------

    def count(self) -> int:
        """Number of data rows (events + rejects). Parquet: from metadata; CSV: one fast scan."""
        if self._count is None:
            if self.format == "parquet":
                self._count = self._parquet().metadata.num_rows
            else:
                self._count = sum(len(b) for b in self._batches(columns=[self.column_map["pu_location_id"]]))
        return self._count

    def __len__(self) -> int:
        return self.count()

    # -- reading ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[TripEvent]:
        return self.events()

    def events(
        self,
        *,
        order: Order = "file",
        limit: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        rejects: list[Reject] | None = None,
    ) -> Iterator[TripEvent]:
        """Events only; rejects are appended to ``rejects`` when given (else dropped)."""
        return _split_rejects(self.records(order=order, limit=limit, start=start, end=end), rejects)

    def records(
        self,
        *,
        order: Order = "file",
        limit: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Iterator[TripEvent | Reject]:
        """Events and rejects interleaved, in ``order``.

        ``order='event-time'`` is a stable sort by pickup (ties keep file order; rows without a
        usable pickup come last). ``limit`` caps the number of *events*; ``start``/``end`` keep
        pickups in ``[start, end)`` (naive wall-clock). Rejects are reported for every row scanned,
        whatever its pickup, because a bad row has no trustworthy time.
        """
        return (item for _, item in self.timed_records(order=order, limit=limit, start=start, end=end))

    def timed_records(
        self,
        *,
        order: Order = "file",
        limit: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Iterator[tuple[int | None, TripEvent | Reject]]:
        """:meth:`records` with each event's pickup in epoch ms (None for a reject).

        The reader has the pickup as a number already; the producer's pacing clock takes it
        from here instead of parsing the event's text again (a fifth of reading a file).
        """
        batches = self.column_batches(order=order, limit=limit, start=start, end=end)
        return (item for columns in batches for item in columns.timed_items())

    def column_batches(
        self,
        *,
        order: Order = "file",
        limit: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Iterator[Columns]:
        """The converted file a batch at a time, with ``limit`` and the pickup bounds applied.

        Every read of a file goes through here: :meth:`timed_records` builds one event per row
        from a batch, the producer's bulk JSON encoder (:mod:`tripstream.events.bulk`) builds the
        Kafka records straight from its columns.
        """
        if order not in ("file", "event-time"):
            raise EventsError(f"unknown order {order!r}; use 'file' or 'event-time'")
        if limit is not None and limit < 0:
            raise EventsError(f"limit must be >= 0, got {limit}")
        lo = None if start is None else wall_clock_ms(start) // 1000
        hi = None if end is None else wall_clock_ms(end) // 1000
        return self._column_batches(order, limit, lo, hi)

    def _column_batches(self, order: str, limit: int | None, lo: int | None, hi: int | None) -> Iterator[Columns]:
        if limit == 0:
            return
        left = limit
        for batch, rows in self._arrow_batches(order):
            columns = self.convert(batch, rows)
            columns.select(lo, hi, left)
            if left is not None:
                left -= columns.event_count
            yield columns
            if left is not None and left <= 0:
                return

    def _arrow_batches(self, order: str) -> Iterator[tuple[pa.RecordBatch | pa.Table, Sequence[int]]]:
        """(batch, source row index of each of its rows), in ``order``."""
        if order == "file":
            offset = 0
            for batch in self._batches():
                yield batch, range(offset, offset + len(batch))
                offset += len(batch)
            return
        table = self._read_table()
        pickup = self.column_map["pickup_at"]
        assert pickup is not None
        _, seconds, _ = _convert_timestamp(table.column(pickup).combine_chunks(), "pickup")
        indices = pc.sort_indices(pa.array(seconds, pa.int64()), null_placement="at_end")
        for first in range(0, len(indices), BATCH_ROWS):
            chunk = indices.slice(first, BATCH_ROWS)
            yield table.take(chunk).combine_chunks(), chunk.to_pylist()

    def convert(self, batch: pa.RecordBatch | pa.Table, rows: Sequence[int]) -> Columns:
        """Convert one batch column by column; rows that cannot be events are marked, not dropped."""
        n = len(batch)
        errors: dict[int, str] = {}
        values: list[list[Any]] = []
        pickup_seconds: list[int | None] = [None] * n
        for name in FIELDS[2:]:
            source = self.column_map.get(name)
            if source is None:
                values.append([None] * n)
                continue
            arr = batch.column(source)
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            kind = field_kind(name)
            if kind == "timestamp":
                converted, secs, errs = _convert_timestamp(arr, source)
                if name == "pickup_at":
                    pickup_seconds = secs
            elif kind == "int":
                converted, errs = _convert_int(arr, source)
            elif kind == "float":
                converted, errs = _convert_float(arr, source)
            else:
                converted, errs = _convert_str(arr, source)
            for i, message in errs.items():
                errors.setdefault(i, message)
            values.append(converted)
        pickup_col = self.column_map["pickup_at"]
        pu_col = self.column_map["pu_location_id"]
        pickups = values[FIELDS.index("pickup_at") - 2]
        zones = values[FIELDS.index("pu_location_id") - 2]
        if pickups.count(None) or zones.count(None):
            for i in range(n):
                if i in errors:
                    continue
                if pickups[i] is None:
                    errors[i] = f"missing pickup time ({pickup_col} is null)"
                elif zones[i] is None:
                    errors[i] = f"missing pickup zone ({pu_col} is null)"
        return Columns(self.source_tag, self.taxi_type, batch, rows, values, pickup_seconds, errors)

    # -- low-level IO -----------------------------------------------------------------------

    def _parquet(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as exc:
            raise UnreadableFileError(f"{self.path}: cannot read parquet ({_one_line(exc)})") from None

    def _batches(self, columns: list[str | None] | None = None) -> Iterator[pa.RecordBatch]:
        try:
            if self.format == "parquet":
                yield from self._parquet().iter_batches(batch_size=BATCH_ROWS, columns=columns)
            else:
                convert = pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in self.columns},
                    strings_can_be_null=True,
                    include_columns=columns,
                )
                reader = pacsv.open_csv(
                    self.path,
                    read_options=pacsv.ReadOptions(block_size=8 << 20),
                    convert_options=convert,
                )
                yield from reader
        except (OSError, EOFError, pa.ArrowException) as exc:
            raise UnreadableFileError(f"{self.path}: cannot read {self.format} ({_one_line(exc)})") from None

    def _read_table(self) -> pa.Table:
        batches = list(self._batches())
        if not batches:
            return pa.table({c: pa.array([], pa.string()) for c in self.columns})
        return pa.Table.from_batches(batches)


def _split_rejects(items: Iterator[TripEvent | Reject], rejects: list[Reject] | None) -> Iterator[TripEvent]:
    for item in items:
        if isinstance(item, Reject):
            if rejects is not None:
                rejects.append(item)
        else:
            yield item


def _raw_row(batch: pa.RecordBatch | pa.Table, i: int) -> dict[str, Any]:
    row = batch.slice(i, 1).to_pylist()[0]
    return {k: (v.isoformat(sep=" ") if isinstance(v, datetime) else v) for k, v in row.items()}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def open_trip_file(path: str | Path, *, source_tag: str | None = None) -> TripSource:
    """Open a TLC green/yellow trip file, checking it is one; nothing is converted yet.

    ``source_tag`` feeds the event ids; by default ``"<taxi_type>:<file stem>"`` so the parquet
    and csv(.gz) copies of the same month give the same ids for the same rows.
    Raises :class:`UnreadableFileError` or :class:`UnknownFormatError` with one clear line.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableFileError(f"{path}: no such file")
    if not path.is_file():
        raise UnreadableFileError(f"{path}: not a regular file")
    kind, stem = _file_kind(path)
    if kind == "parquet":
        try:
            columns = list(pq.read_schema(path).names)
        except (OSError, pa.ArrowException) as exc:
            raise UnreadableFileError(f"{path}: cannot read parquet ({_one_line(exc)})") from None
    else:
        columns = _csv_header(path)
    taxi_type = _detect_taxi_type(path, columns)
    return TripSource(path, kind, taxi_type, columns, source_tag or f"{taxi_type}:{stem}")
