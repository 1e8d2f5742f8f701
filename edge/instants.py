"""How instants are written and read: ISO 8601 in UTC out (keystore, audit, JSON output),
ISO 8601 in, where a time without a zone is the device's local time."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import overload

from edge.errors import UsageError


@overload
def iso_utc(instant: datetime) -> str: ...
@overload
def iso_utc(instant: datetime | None) -> str | None: ...
def iso_utc(instant: datetime | None) -> str | None:
    """ISO 8601 in UTC, or None."""
    return instant.astimezone(timezone.utc).isoformat() if instant is not None else None


def parse_instant(text: str | None, option: str) -> datetime | None:
    """ISO 8601; without a zone it is the device's local time. `option` names the input in errors."""
    if text is None:
        return None
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not an ISO 8601 date or time, e.g. 2026-11-01 or 2026-11-01T18:00:00+01:00",
            setting=option,
        ) from None
    return instant.astimezone() if instant.tzinfo is None else instant
