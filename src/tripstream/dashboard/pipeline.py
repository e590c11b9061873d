"""The dashboard's pipeline panel: Flink's jobs and cluster, Kafka's lag, in one snapshot.

Built from the same samples `tripstream health` judges (:func:`tripstream.health.sample_jobs`),
plus the watermark lag: how far a job's watermark trails the newest event at the end of its
topic. Both are event-time clocks (the trips' wall-clock), so the difference means something even
when replaying October 2024; "now minus watermark" would not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tripstream.stack import Stack


def snapshot(stack: Stack) -> dict[str, Any]:
    """Jobs (newest per name, ended ones too), their lag and checkpoints, and the cluster."""
    from tripstream.health import sample_jobs
    from tripstream.kafka.errors import KafkaError
    from tripstream.kafka.lag import latest_event_ms

    overview = stack.flink.overview() or {}
    jobs = sample_jobs(stack, include_ended=True)
    newest_event: dict[str, int | None] = {}
    rows = []
    for name, row in sorted(jobs.items()):
        now = row.get("now_ms") or int(time.time() * 1000)
        cp = row.get("last_checkpoint")
        lag = row.get("lag") or []
        item: dict[str, Any] = {
            "name": name, "id": row["id"], "state": row["state"], "uptime_s": row.get("uptime_s"),
            "restarts": row.get("restarts"), "watermark": row.get("watermark"),
            "records_in": row.get("records_in"), "records_out": row.get("records_out"),
            "records_in_per_s": row.get("records_in_per_s"), "records_out_per_s": row.get("records_out_per_s"),
            "checkpoints": row.get("checkpoints"),
            "last_checkpoint": None if not cp else {
                "id": cp.get("id"), "size_bytes": cp.get("size_bytes"),
                "age_s": round((now - cp["at_ms"]) / 1000, 1) if cp.get("at_ms") else None},
            "partitions": lag,
            "lag_total": sum(p["lag"] for p in lag if p.get("lag") is not None) if lag else None,
            "watermark_lag_s": None,
        }
        topics = {p["topic"] for p in lag}
        if row.get("watermark_ms") and topics and row["state"] == "RUNNING":
            for topic in topics - newest_event.keys():
                try:
                    newest_event[topic] = latest_event_ms(stack.settings.kafka, topic)
                except KafkaError:
                    newest_event[topic] = None
            newest = max((newest_event[t] for t in topics if newest_event.get(t)), default=None)
            if newest:
                item["watermark_lag_s"] = round(max(0, newest - row["watermark_ms"]) / 1000, 1)
        rows.append(item)
    return {
        "flink": {"version": overview.get("flink-version"), "taskmanagers": overview.get("taskmanagers"),
                  "slots_total": overview.get("slots-total"), "slots_available": overview.get("slots-available"),
                  "rest": stack.flink.rest_url, "up": bool(overview)},
        "jobs": rows,
        "nodes": nodes(stack),
    }


def nodes(stack: Stack) -> list[dict[str, Any]]:
    """Every local process of the stack (each broker, JobManager, TaskManager...) and its state."""
    found: list[dict[str, Any]] = []
    if not stack.settings.several_nodes:
        return found  # one of each: the pipeline line says it all
    for service in stack.services():
        for role, node in service.nodes_status().items():
            address = node["address"].removesuffix(" (leader)")
            found.append({"component": service.name, "role": role, "state": node["state"], "address": address,
                          "leader": node["address"].endswith(" (leader)")})
    return found


class Cached:
    """A value recomputed at most every ``ttl`` seconds, one computation at a time.

    Several browser tabs polling every two seconds must not each start their own round of REST
    calls and Kafka consumers: the first caller computes, the others wait for its answer.
    """

    def __init__(self, compute: Callable[[], Any], ttl: float = 1.5) -> None:
        self._compute = compute
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value: Any = None
        self._at = float("-inf")

    def get(self) -> Any:
        with self._lock:
            if time.monotonic() - self._at >= self._ttl:
                self._value = self._compute()
                self._at = time.monotonic()
            return self._value
