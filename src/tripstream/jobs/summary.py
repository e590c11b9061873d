"""A few lines on what the jobs wrote, for `tripstream summary` and the demo."""

from __future__ import annotations

from collections.abc import Iterator

from tripstream.stack import Stack


def _zone_names() -> dict[int, str]:
    from tripstream.events.zones import default_zone_lookup_path, load_zones

    path = default_zone_lookup_path()
    return {z.location_id: f"{z.zone} ({z.borough})" for z in load_zones(path)} if path else {}


def summarize(stack: Stack, top: int = 5) -> Iterator[str]:
    """Lines of text; a table the jobs have not written yet is said to be empty."""
    names = _zone_names()

    def zone(zone_id: int | None) -> str:
        return names.get(zone_id, f"zone {zone_id}") if zone_id is not None else "unknown zone"

    with stack.postgres.connect() as conn:
        def one(sql: str):  # noqa: ANN202
            try:
                return conn.execute(sql).fetchall()
            except Exception:  # noqa: BLE001 - a table not created yet reads as empty
                conn.rollback()
                return []

        busiest = one("SELECT pu_location_id, sum(trips) AS n, count(*) FROM tumbling_zone_stats "
                      f"GROUP BY 1 ORDER BY n DESC LIMIT {top}")
        yield "Busiest pickup zones (tumbling_zone_stats):" if busiest else "tumbling_zone_stats is empty"
        for zone_id, trips, windows in busiest:
            yield f"  {trips:>6,} trips in {windows:>5,} windows  {zone(zone_id)}"
        peak = one("SELECT window_start, pu_location_id, trips FROM tumbling_zone_stats ORDER BY trips DESC, 1 LIMIT 1")
        if peak:
            yield f"Busiest 5-minute window: {peak[0][2]} trips from {zone(peak[0][1])} at {peak[0][0]}"
        longest = one("SELECT pu_location_id, do_location_id, session_start, session_end, trips FROM pair_sessions "
                      "ORDER BY session_end - session_start DESC, trips DESC LIMIT 1")
        if longest:
            pu, do, start, end, trips = longest[0]
            yield (f"Longest unbroken streak (pair_sessions): {zone(pu)} -> {zone(do)}, {trips} trips "
                   f"from {start} to {end} ({end - start})")
        for job, n in one("SELECT job, count(*) FROM late_trips GROUP BY 1 ORDER BY 1"):
            yield f"Late events reported by {job}: {n:,}"
        if not one("SELECT 1 FROM late_trips LIMIT 1"):
            yield "Late events (late_trips): none"
        bad = one("SELECT job, count(*) FROM bad_records GROUP BY 1 ORDER BY 1")
        for job, n in bad:
            yield f"Bad records set aside by {job}: {n:,} (bad_records)"
        if not bad:
            yield "Bad records (bad_records): none"
        surges = one("SELECT count(*), max(ratio) FROM surge_alerts")
        if surges and surges[0][0]:
            yield f"Surge alerts: {surges[0][0]:,} (highest {surges[0][1]:.1f}x the zone's baseline)"
        for rule, n in one("SELECT rule, count(*) FROM trip_anomalies GROUP BY 1 ORDER BY 2 DESC"):
            yield f"Anomalies, {rule}: {n:,}"
