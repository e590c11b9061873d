"""The dashboard in a real browser (Debian's headless Chromium, driven by Selenium), live data.

Trips go through Kafka and a running tumbling job into PostgreSQL; the page must show exactly
what the tables hold, with no console error, and follow when more trips are produced. Alerts,
sessions and late rows are written straight into their tables (their jobs are tested elsewhere).
The screenshots land in build/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tripstream.dashboard.server import DashboardServer
from tripstream.events import TripEvent
from tripstream.events.producer import TripProducer
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import active_job, stop, submit
from tripstream.kafka.topics import ensure_topic
from tripstream.stack import Stack
from tripstream.stack.process import wait_until

from tests.conftest import ROOT

pytestmark = pytest.mark.stack

SCREENSHOTS = ROOT / "build" / "screenshots"
DAY = "2025-01-01"  # after all other tests' trips (the "current" windows), not in the future (Kafka refuses those)
# (minute, zone, count): the newest window (08:10-08:15) is led by zone 161, then 236.
FIRST = [(0, 161, 3), (1, 236, 4), (3, 7, 1), (5, 161, 5), (7, 236, 2), (10, 161, 6), (12, 236, 3), (13, 74, 2)]
SECOND = [(15, 236, 7), (16, 161, 2), (21, 74, 5), (22, 161, 4)]


def _events(topic: str, batch: list[tuple[int, int, int]], tag: str) -> list[TripEvent]:
    """The batch's trips. Windows are updated as trips arrive, so no later trip is needed to
    write them: the newest window in PostgreSQL is the batch's last one."""
    events = []
    for minute, zone, count in batch:
        for i in range(count):
            events.append(TripEvent.from_mapping({
                "event_id": f"{topic}-{tag}-{minute}-{zone}-{i}", "taxi_type": "yellow",
                "pickup_at": f"{DAY} 08:{minute:02d}:{i * 5:02d}", "pu_location_id": zone,
                "total_amount": 12.5 + i, "tip_amount": 2.0, "trip_distance": 1.5 + i / 10}))
    return events


def _send(stack: Stack, topic: str, events: list[TripEvent]) -> None:
    report = TripProducer(stack.settings.kafka, topic).send((None, e) for e in events)
    assert report.ok and report.delivered == len(events)


def _sql(stack: Stack, query: str, *params: Any) -> list[tuple]:
    with stack.postgres.connect() as conn:
        return conn.execute(query, params).fetchall()


def _clean(stack: Stack) -> None:
    with stack.postgres.connect() as conn:
        conn.execute("DELETE FROM tumbling_zone_stats WHERE window_start >= %s", (DAY,))
        conn.execute("DELETE FROM surge_alerts WHERE window_start >= %s", (DAY,))
        conn.execute("DELETE FROM trip_anomalies WHERE pickup_at >= %s", (DAY,))
        conn.execute("DELETE FROM pair_sessions WHERE session_start >= %s", (DAY,))
        conn.execute("DELETE FROM late_trips WHERE job = 'dashboard-test'")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian's packages; `make bootstrap` installs it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromedriver are missing: run `make bootstrap`"
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1400", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def live(stack: Stack) -> Iterator[dict[str, Any]]:
    """A running tumbling job on a fresh topic holding the first batch, and the dashboard."""
    from tripstream.jobs.migrations import migrate

    with stack.postgres.connect() as conn:
        migrate(conn)
    _clean(stack)
    topic = f"dash-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=1)
    _send(stack, topic, _events(topic, FIRST, "a"))
    with stack.postgres.connect() as conn:
        conn.execute("INSERT INTO surge_alerts VALUES (%s, %s, 161, 14, 4.0, 3.5)", (f"{DAY} 08:00", f"{DAY} 08:15"))
        conn.execute("INSERT INTO trip_anomalies VALUES (%s, 'over 80 mph', %s, 74, 40, 55, 900, 160)",
                     (f"{topic}-anomaly", f"{DAY} 08:13"))
        conn.execute("INSERT INTO pair_sessions VALUES (161, 236, %s, %s, 12)", (f"{DAY} 07:40", f"{DAY} 08:20"))
        conn.execute("INSERT INTO late_trips (job, kafka_topic, kafka_partition, kafka_offset, event_id, "
                     "pu_location_id, pickup_at, window_end, watermark_at) "
                     "VALUES ('dashboard-test', %s, 0, 0, %s, 7, %s, %s, %s)",
                     (topic, f"{topic}-late", f"{DAY} 08:02", f"{DAY} 08:05", f"{DAY} 08:09"))
    server = DashboardServer(stack, port=0, refresh_ms=500).start()
    submit(stack, JobOptions(job="tumbling", topic=topic))
    try:
        yield {"topic": topic, "url": server.url}
    finally:
        if active_job(stack, "tumbling"):
            stop(stack, "tumbling")
        server.stop()
        _clean(stack)


def _page(driver: Any) -> dict[str, Any]:
    """What the page shows right now, read from its DOM."""
    return driver.execute_script("""
        const q = (s) => [...document.querySelectorAll(s)];
        const lw = document.getElementById('latest-window');
        return {
          updates: Number(document.body.dataset.updates || 0),
          windowEnd: lw.dataset.windowEnd || null,
          totalTrips: document.getElementById('latest-trips').textContent,
          top: q('#top-zones li[data-zone-id]').map(li => [Number(li.dataset.zoneId), Number(li.dataset.trips),
                                                          li.querySelector('.zone-name').textContent]),
          cells: q('#demand-grid .zone').filter(c => Number(c.dataset.trips) > 0)
                   .map(c => [Number(c.dataset.zoneId), Number(c.dataset.trips)]),
          series: q('#series-trips path[data-zone-id]').map(p => [Number(p.dataset.zoneId), p.dataset.values]),
          surges: q('#surges li[data-zone-id]').map(li => li.textContent),
          anomalies: q('#anomalies li[data-rule]').map(li => li.dataset.rule),
          sessions: q('#sessions tbody tr').map(tr => tr.textContent),
          lateTotal: document.getElementById('late-chart').dataset.total,
          jobs: q('#jobs tbody tr[data-job]').map(tr => [tr.dataset.job, tr.children[1].textContent]),
          errors: q('.panel .error').filter(e => !e.hidden).map(e => e.textContent),
        };""")


def _expected(stack: Stack) -> dict[str, Any]:
    """The same facts, straight from PostgreSQL."""
    end = _sql(stack, "SELECT max(window_end) FROM tumbling_zone_stats")[0][0]
    newest = _sql(stack, "SELECT pu_location_id, trips FROM tumbling_zone_stats WHERE window_end = %s "
                         "ORDER BY trips DESC, pu_location_id", end)
    ends = [r[0] for r in _sql(stack, "SELECT DISTINCT window_end FROM tumbling_zone_stats ORDER BY 1 DESC LIMIT 24")]
    series = {}
    for zone, _ in newest[:1]:
        counts = dict(_sql(stack, "SELECT window_end, trips FROM tumbling_zone_stats WHERE pu_location_id = %s "
                                  "AND window_end >= %s", zone, min(ends)))
        series[zone] = ",".join(str(counts.get(e, 0)) for e in sorted(ends))
    return {"windowEnd": str(end), "top": [list(r) for r in newest], "series": series,
            "total": sum(n for _, n in newest)}


def _shows_the_tables(driver: Any, stack: Stack, window_end: str) -> bool:
    page, want = _page(driver), _expected(stack)
    if want["windowEnd"] != window_end or page["windowEnd"] != window_end:
        return False
    return ([[z, n] for z, n, _ in page["top"]] == want["top"]
            and sorted(page["cells"]) == sorted(want["top"])
            and all([z, v] in page["series"] for z, v in want["series"].items())
            and page["totalTrips"] == f"{want['total']:,}")


def _console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_page_shows_postgres_and_follows_new_events(stack: Stack, live: dict[str, Any], browser: Any) -> None:
    # The first batch's windows 08:00, 08:05 and 08:10 are written as its trips arrive.
    wait_until(lambda: _sql(stack, "SELECT count(DISTINCT window_start) FROM tumbling_zone_stats "
                                   "WHERE window_start >= %s AND window_end <= %s", DAY, f"{DAY} 08:15")[0][0] == 3,
               120, "the tumbling job to write the first batch's three windows")
    browser.get(live["url"])
    wait_until(lambda: _shows_the_tables(browser, stack, f"{DAY} 08:15:00"), 60,
               "the page to show the newest window (08:10-08:15) as PostgreSQL holds it")
    page = _page(browser)
    assert page["top"][0] == [161, 6, "Midtown Center (Manhattan)"]
    assert page["top"][1][:2] == [236, 3]
    assert any("Midtown Center" in s and "3.5×" in s for s in page["surges"])
    assert "over 80 mph" in page["anomalies"]
    assert any("Midtown Center (Manhattan) → Upper East Side North (Manhattan)" in s and "40.0" in s
               for s in page["sessions"])
    assert int(page["lateTotal"]) >= 1
    wait_until(lambda: ["tumbling", "RUNNING"] in _page(browser)["jobs"], 30, "the pipeline panel to list the job")
    assert _page(browser)["errors"] == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "dashboard.png"))

    # More trips: the job writes three more windows and the page follows without a reload.
    updates = _page(browser)["updates"]
    _send(stack, live["topic"], _events(live["topic"], SECOND, "b"))
    wait_until(lambda: _shows_the_tables(browser, stack, f"{DAY} 08:25:00"), 120,
               "the page to show the new newest window (08:20-08:25)")
    page = _page(browser)
    assert page["updates"] > updates
    assert page["top"] == [[74, 5, "East Harlem North (Manhattan)"], [161, 4, "Midtown Center (Manhattan)"]]
    assert browser.save_screenshot(str(SCREENSHOTS / "dashboard-after.png"))
    assert _console_errors(browser) == []
    assert Path(SCREENSHOTS / "dashboard.png").stat().st_size > 10_000
