"""Bad payloads and the reason each must get, from the jobs (Java) and from verify (Python) alike."""

from __future__ import annotations

import json
from typing import Any


def trip(event_id: str, pickup: str, zone: int = 701, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "taxi_type": "green", "pickup_at": pickup, "pu_location_id": zone,
            "total_amount": 10.0, **extra}


def encoded(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def bad_cases(prefix: str) -> list[tuple[bytes | None, str]]:
    """(payload, reason) for every kind of bad record the jobs must set aside."""
    ok = trip(f"{prefix}-x", "2021-03-01 08:03:00")
    without_zone = {k: v for k, v in ok.items() if k != "pu_location_id"}
    return [
        (None, "empty payload"),
        (b"", "empty payload"),
        (b"{this is not json", "not JSON"),
        (encoded(ok) + b" trailing", "not JSON"),
        (encoded(ok)[:-1] + b', "fare_amount": NaN}', "not JSON"),
        (b"\xff\xfe not utf-8", "not JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (encoded(without_zone), "missing pu_location_id"),
        (encoded({**ok, "event_id": ""}), "missing event_id"),
        (encoded({**ok, "pu_location_id": "downtown"}), "pu_location_id: expected integer"),
        (encoded({**ok, "passenger_count": 2.5}), "passenger_count: expected integer"),
        (encoded({**ok, "vendor_id": 2**40}), "vendor_id: expected integer"),
        (encoded({**ok, "fare_amount": "NaN"}), "fare_amount: expected number"),
        (encoded({**ok, "tip_amount": True}), "tip_amount: expected number"),
        (encoded(ok)[:-1] + b', "total_amount": 1e999}', "total_amount: not finite"),
        (encoded({**ok, "taxi_type": 7}), "taxi_type: expected text"),
        (encoded({**ok, "event_id": "nul\u0000inside"}), "event_id: contains NUL"),
        (encoded({**ok, "event_id": "x" * 3000}), "event_id: longer than 128 characters"),
        (encoded({**ok, "store_and_fwd_flag": "\u00e9" * 129}), "store_and_fwd_flag: longer than 128 characters"),
        (encoded({**ok, "pickup_at": "2021-13-01 08:00:00"}), "pickup_at: expected timestamp YYYY-MM-DD HH:MM:SS"),
        (encoded({**ok, "pickup_at": 1614585600}), "pickup_at: expected timestamp YYYY-MM-DD HH:MM:SS"),
        (encoded({**ok, "dropoff_at": "yesterday"}), "dropoff_at: expected timestamp YYYY-MM-DD HH:MM:SS"),
        (encoded({**ok, "pickup_at": "2099-06-01 08:00:00"}), "pickup_at: too far in the future"),
        (encoded({**ok, "pickup_at": "1999-06-01 08:00:00"}), "pickup_at: too far in the past"),
    ]
