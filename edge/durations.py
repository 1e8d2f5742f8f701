"""Durations as written in the household config: "0s", "800ms", "90m", "24h", "7d"."""

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d{1,9})\s*(ms|s|m|h|d)\s*$")
LONGEST = timedelta(days=3650)
"""No duration in a household config may be longer (ten years): retention is for bounding
what is kept, and instants beyond it would overflow the calendar long before "forever"."""
ALLOWED = 'a whole number and a unit, such as "0s", "800ms", "90m", "24h" or "7d" (units: ms, s, m, h, d), at most 3650d (ten years)'


def parse_duration(text: object) -> timedelta:
    """Parse one duration; raise ValueError (message = what is allowed) otherwise."""
    if not isinstance(text, str):
        raise ValueError(ALLOWED)
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(ALLOWED)
    number, unit = match.groups()
    value = timedelta(seconds=int(number) * _UNITS[unit])
    if value > LONGEST:
        raise ValueError(ALLOWED)
    return value


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration, for messages ("90m", "7d")."""
    ms = round(value.total_seconds() * 1000)
    for unit, factor in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % factor == 0:
            return f"{ms // factor}{unit}"
    return f"{ms}ms" if ms else "0s"
