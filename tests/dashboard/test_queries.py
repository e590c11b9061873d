"""The dashboard's panels on known rows, in a scratch schema of the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tripstream.dashboard import queries
from tripstream.jobs.migrations import migrate
from tripstream.stack import Stack

pytestmark = pytest.mark.stack


@pytest.fixture
def scratch(stack: Stack) -> Iterator[Any]:
    """A connection whose search path is an empty schema of its own (dropped afterwards)."""
    schema = f"dash_{uuid.uuid4().hex[:8]}"
    with stack.postgres.connect(autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        try:
            yield conn
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_tables_not_created_yet_read_as_empty(scratch: Any) -> None:
    assert queries.demand(scratch) == {"window_start": None, "window_end": None, "zones": [], "total_trips": 0}
    assert queries.series(scratch) == {"windows": [], "zones": []}
    assert queries.alerts(scratch) == {"surges": [], "surge_count": 0, "anomalies": [], "anomaly_count": 0}
    assert queries.sessions(scratch) == []
    assert queries.quality(scratch) == {"late": [], "late_total": 0, "bad": [], "bad_total": 0, "bad_table": False}


def _fill(conn: Any) -> None:
    migrate(conn)
    rows = [  # window_start, zone, trips, revenue: zone 161 leads the newest window
        ("2030-05-01 09:00", 161, 4, 40.0), ("2030-05-01 09:00", 236, 6, 66.0),
        ("2030-05-01 09:05", 161, 9, 95.5), ("2030-05-01 09:05", 236, 2, 20.0), ("2030-05-01 09:05", 7, 1, 8.0),
    ]
    for start, zone, trips, revenue in rows:
        conn.execute("INSERT INTO tumbling_zone_stats VALUES (%s, %s::timestamp + interval '5 minutes', %s, %s, %s, 0, 1)",
                     (start, start, zone, trips, revenue))
    conn.execute("INSERT INTO surge_alerts VALUES ('2030-05-01 08:55', '2030-05-01 09:10', 161, 13, 4.0, 3.25)")
    conn.execute("INSERT INTO trip_anomalies VALUES ('e1', 'over 80 mph', '2030-05-01 09:03', 7, 30, 40, 600, 180)")
    conn.execute("INSERT INTO pair_sessions VALUES (161, 236, '2030-05-01 08:00', '2030-05-01 09:20', 14), "
                 "(7, 7, '2030-05-01 09:00', '2030-05-01 09:10', 2), (1, 1, '2030-04-01 00:00', '2030-04-01 05:00', 9)")
    conn.execute("INSERT INTO late_trips (job, kafka_topic, kafka_partition, kafka_offset, event_id, pu_location_id, "
                 "pickup_at, window_end, watermark_at) VALUES "
                 "('tumbling', 't', 0, 1, 'a', 7, '2030-05-01 09:01', '2030-05-01 09:05', '2030-05-01 09:06'), "
                 "('sliding', 't', 0, 1, 'a', 7, '2030-05-01 09:01', '2030-05-01 09:05', '2030-05-01 09:06'), "
                 "('tumbling', 't', 0, 2, 'b', 7, '2030-05-01 07:59', '2030-05-01 08:00', '2030-05-01 08:03')")


def test_panels_show_the_rows_in_the_tables(scratch: Any) -> None:
    _fill(scratch)
    demand = queries.demand(scratch)
    assert (demand["window_start"], demand["window_end"], demand["total_trips"]) == \
        ("2030-05-01 09:05:00", "2030-05-01 09:10:00", 12)
    assert [(z["id"], z["trips"]) for z in demand["zones"]] == [(161, 9), (236, 2), (7, 1)]
    assert demand["zones"][0]["name"] == "Midtown Center (Manhattan)"

    series = queries.series(scratch, top=2)
    assert series["windows"] == ["2030-05-01 09:05:00", "2030-05-01 09:10:00"]
    assert [(z["id"], z["trips"], z["revenue"]) for z in series["zones"]] == \
        [(161, [4, 9], [40.0, 95.5]), (236, [6, 2], [66.0, 20.0])]

    alerts = queries.alerts(scratch)
    assert (alerts["surge_count"], alerts["anomaly_count"]) == (1, 1)
    assert alerts["surges"][0] | {"zone": None} == {"window_start": "2030-05-01 08:55:00", "window_end": "2030-05-01 09:10:00",
                                                   "zone_id": 161, "zone": None, "trips": 13, "baseline": 4.0, "ratio": 3.25}
    assert alerts["anomalies"][0]["rule"] == "over 80 mph"

    # Current sessions: those ending within the last hour of event time, longest first.
    assert [(s["pu_location_id"], s["do_location_id"], s["minutes"]) for s in queries.sessions(scratch)] == \
        [(161, 236, 80.0), (7, 7, 10.0)]

    quality = queries.quality(scratch)
    assert quality["late_total"] == 3
    assert [(q["bucket"], q["job"], q["count"]) for q in quality["late"]] == \
        [("2030-05-01 07:00:00", "tumbling", 1), ("2030-05-01 09:00:00", "sliding", 1), ("2030-05-01 09:00:00", "tumbling", 1)]
    assert (quality["bad_table"], quality["bad_total"], quality["bad"]) == (True, 0, [])  # created, still empty


def test_bad_records_are_counted_once_their_table_exists(scratch: Any) -> None:
    migrate(scratch)  # the bad_records table as the jobs write it
    scratch.execute("INSERT INTO bad_records (job, kafka_topic, kafka_partition, kafka_offset, reason, payload, "
                    "received_at) VALUES "
                    "('passthrough', 't', 0, 1, 'bad json', 'x', '2030-05-01 09:00:10'), "
                    "('passthrough', 't', 0, 2, 'bad json', 'y', '2030-05-01 09:00:50'), "
                    "('passthrough', 't', 1, 5, 'missing field', 'z', '2030-05-01 09:02:00')")
    quality = queries.quality(scratch)
    assert (quality["bad_table"], quality["bad_total"]) == (True, 3)
    assert sorted((q["reason"], q["count"]) for q in quality["bad"]) == [("bad json", 2), ("missing field", 1)]
