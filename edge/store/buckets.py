"""Retention buckets: sessions of one profile whose data of one kind dies in the same
window share one key, so shredding is O(buckets), not O(sessions).

A bucket's expiry is the session's policy expiry rounded *down* to the window:
data may die a little earlier than its policy allows, never later.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from edge.values import DataKind

WINDOWS = tuple(timedelta(seconds=s) for s in (1, 10, 60, 300, 900, 3600))
"""Candidate window sizes; the largest at most 1/12 of the retention is used."""


def window_for(keep: timedelta) -> timedelta:
    """At most 1/12 of the retention (so rounding costs under ~8% of it), at most 1 h."""
    fitting = [w for w in WINDOWS if w * 12 <= keep]
    return fitting[-1] if fitting else WINDOWS[0]


def expiry_for(created: datetime, keep: timedelta) -> datetime:
    """The instant data created at `created` and kept `keep` must be gone (UTC)."""
    due = (created + keep).astimezone(timezone.utc)
    step = int(window_for(keep).total_seconds())
    epoch = int(due.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, timezone.utc)


def bucket_id(profile: str, kind: DataKind, expires: datetime) -> str:
    return f"{profile}.{kind}.{expires.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"
