"""Durations as written in the household config ("0s", "800ms", "90m", "24h", "7d"), and as a
person reads them ("3 days 4 hours")."""

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


def human(duration: timedelta) -> str:
    """A duration as a person says it: "57 years 3 days", "3 days 4 hours", "12 minutes", "40 seconds"."""
    seconds = abs(duration.total_seconds())
    for unit, size in (("year", 365 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            whole, rest = divmod(int(seconds), size)
            text = f"{whole} {unit}{'s' if whole != 1 else ''}"
            smaller = {"year": ("day", 86400), "day": ("hour", 3600), "hour": ("minute", 60)}.get(unit)
            if smaller and rest >= smaller[1]:
                count = rest // smaller[1]
                text += f" {count} {smaller[0]}{'s' if count != 1 else ''}"
            return text
    return f"{seconds:.0f} second{'s' if round(seconds) != 1 else ''}"
