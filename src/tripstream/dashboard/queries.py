"""What the dashboard shows, read from PostgreSQL: one function per panel, plain JSON-ready data.

Event times are the trips' own wall-clock (the sample is October 2024), so "current" means the
newest windows in a table, never now(). A table the jobs have not created yet reads as empty,
and so does ``bad_records`` until the job that writes it exists.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def zone_lookup() -> dict[int, dict[str, str]]:
    """LocationID -> zone, borough, service zone, from the TLC lookup (empty when it is missing)."""
    from tripstream.events.zones import default_zone_lookup_path, load_zones

    path = default_zone_lookup_path()
    if path is None:
        return {}
    return {z.location_id: {"zone": z.zone, "borough": z.borough, "service_zone": z.service_zone}
            for z in load_zones(path)}


def zone_name(zone_id: int | None) -> str:
    """"Zone (Borough)" for a LocationID, or "zone N" when the lookup does not know it."""
    if zone_id is None:
        return "unknown zone"
    z = zone_lookup().get(int(zone_id))
    return f"{z['zone']} ({z['borough']})" if z and z["zone"] else f"zone {zone_id}"


def _iso(value: Any) -> Any:
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value


def table_exists(conn: Any, name: str) -> bool:
    """True when ``name`` is a table in the search path (``to_regclass`` never raises)."""
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def zones() -> list[dict[str, Any]]:
    """Every zone of the lookup, for the demand grid's layout (grouped by borough on the page)."""
    return [{"id": zid, **z} for zid, z in sorted(zone_lookup().items())]


def demand(conn: Any) -> dict[str, Any]:
    """Trips and revenue per pickup zone in the newest tumbling window, busiest first."""
    if not table_exists(conn, "tumbling_zone_stats"):
        return {"window_start": None, "window_end": None, "zones": [], "total_trips": 0}
    latest = conn.execute("SELECT window_start, window_end FROM tumbling_zone_stats "
                          "ORDER BY window_end DESC, window_start DESC LIMIT 1").fetchone()
    if latest is None:
        return {"window_start": None, "window_end": None, "zones": [], "total_trips": 0}
    rows = conn.execute("SELECT pu_location_id, trips, revenue FROM tumbling_zone_stats "
                        "WHERE window_start = %s AND window_end = %s ORDER BY trips DESC, pu_location_id",
                        latest).fetchall()
    return {"window_start": _iso(latest[0]), "window_end": _iso(latest[1]),
            "zones": [{"id": z, "name": zone_name(z), "trips": n, "revenue": round(r or 0.0, 2)} for z, n, r in rows],
            "total_trips": sum(n for _, n, _ in rows)}


def series(conn: Any, top: int = 5, windows: int = 24) -> dict[str, Any]:
    """Trips and revenue per window for the ``top`` busiest zones of the last ``windows`` windows."""
    empty: dict[str, Any] = {"windows": [], "zones": []}
    if not table_exists(conn, "tumbling_zone_stats"):
        return empty
    ends = [r[0] for r in conn.execute("SELECT DISTINCT window_end FROM tumbling_zone_stats "
                                       "ORDER BY window_end DESC LIMIT %s", (windows,))]
    if not ends:
        return empty
    ends.reverse()
    busiest = conn.execute("SELECT pu_location_id, sum(trips) FROM tumbling_zone_stats WHERE window_end >= %s "
                           "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT %s", (ends[0], top)).fetchall()
    ids = [z for z, _ in busiest]
    cells = {(z, e): (n, r) for z, e, n, r in conn.execute(
        "SELECT pu_location_id, window_end, trips, revenue FROM tumbling_zone_stats "
        "WHERE window_end >= %s AND pu_location_id = ANY(%s)", (ends[0], ids))}
    return {
        "windows": [_iso(e) for e in ends],
        "zones": [{"id": z, "name": zone_name(z),
                   "trips": [cells.get((z, e), (0, 0.0))[0] for e in ends],
                   "revenue": [round(cells.get((z, e), (0, 0.0))[1] or 0.0, 2) for e in ends]} for z in ids],
    }


def alerts(conn: Any, limit: int = 12) -> dict[str, Any]:
    """The newest surge flags and anomaly alerts, with how many there are in all."""
    out: dict[str, Any] = {"surges": [], "surge_count": 0, "anomalies": [], "anomaly_count": 0}
    if table_exists(conn, "surge_alerts"):
        out["surge_count"] = conn.execute("SELECT count(*) FROM surge_alerts").fetchone()[0]
        out["surges"] = [
            {"window_start": _iso(s), "window_end": _iso(e), "zone_id": z, "zone": zone_name(z), "trips": n,
             "baseline": round(b, 2), "ratio": round(r, 2)}
            for s, e, z, n, b, r in conn.execute(
                "SELECT window_start, window_end, pu_location_id, trips, baseline, ratio FROM surge_alerts "
                "ORDER BY window_end DESC, ratio DESC, pu_location_id LIMIT %s", (limit,))]
    if table_exists(conn, "trip_anomalies"):
        out["anomaly_count"] = conn.execute("SELECT count(*) FROM trip_anomalies").fetchone()[0]
        out["anomalies"] = [
            {"event_id": i, "rule": rule, "pickup_at": _iso(p), "zone_id": z, "zone": zone_name(z),
             "trip_distance": d, "fare_amount": f, "duration_s": dur, "speed_mph": None if v is None else round(v, 1)}
            for i, rule, p, z, d, f, dur, v in conn.execute(
                "SELECT event_id, rule, pickup_at, pu_location_id, trip_distance, fare_amount, duration_s, speed_mph "
                "FROM trip_anomalies ORDER BY pickup_at DESC, event_id, rule LIMIT %s", (limit,))]
    return out


def sessions(conn: Any, limit: int = 10, horizon_minutes: int = 60) -> list[dict[str, Any]]:
    """The longest sessions among those ending in the last ``horizon_minutes`` of event time."""
    if not table_exists(conn, "pair_sessions"):
        return []
    rows = conn.execute(
        "SELECT pu_location_id, do_location_id, session_start, session_end, trips FROM pair_sessions "
        "WHERE session_end >= (SELECT max(session_end) FROM pair_sessions) - make_interval(mins => %s) "
        "ORDER BY session_end - session_start DESC, trips DESC, session_end DESC LIMIT %s",
        (horizon_minutes, limit)).fetchall()
    return [{"pickup_zone": zone_name(pu), "dropoff_zone": zone_name(do), "pu_location_id": pu,
             "do_location_id": do, "session_start": _iso(s), "session_end": _iso(e),
             "minutes": round((e - s).total_seconds() / 60, 1), "trips": n} for pu, do, s, e, n in rows]


def quality(conn: Any, buckets: int = 24) -> dict[str, Any]:
    """Late records per event-time hour (by job) and bad records per minute received.

    ``bad_records`` may not exist yet: then its counts are zero, not an error.
    """
    out: dict[str, Any] = {"late": [], "late_total": 0, "bad": [], "bad_total": 0, "bad_table": False}
    if table_exists(conn, "late_trips"):
        out["late_total"] = conn.execute("SELECT count(*) FROM late_trips").fetchone()[0]
        out["late"] = [{"bucket": _iso(b), "job": j, "count": n} for b, j, n in conn.execute(
            "WITH top AS (SELECT date_trunc('hour', max(pickup_at)) AS t FROM late_trips) "
            "SELECT date_trunc('hour', pickup_at) AS b, job, count(*) FROM late_trips, top "
            "WHERE pickup_at >= top.t - make_interval(hours => %s - 1) GROUP BY 1, 2 ORDER BY 1, 2", (buckets,))]
    if table_exists(conn, "bad_records"):
        out["bad_table"] = True
        out["bad_total"] = conn.execute("SELECT count(*) FROM bad_records").fetchone()[0]
        out["bad"] = [{"bucket": _iso(b), "reason": r, "count": n} for b, r, n in conn.execute(
            "WITH top AS (SELECT date_trunc('minute', max(received_at)) AS t FROM bad_records) "
            "SELECT date_trunc('minute', received_at) AS b, reason, count(*) FROM bad_records, top "
            "WHERE received_at >= top.t - make_interval(mins => %s - 1) GROUP BY 1, 2 ORDER BY 1, 2", (buckets,))]
    return out
