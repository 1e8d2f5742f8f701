"""The what-if views (`status --at`, `purge --dry-run`): what will have been shredded by a
time, and what is still kept then, each with when and why. They read; they write nothing."""

from __future__ import annotations

from datetime import datetime

from edge.audit.story import local
from edge.durations import human, parse_duration
from edge.errors import UsageError
from edge.instants import parse_instant
from edge.retention.forecast import Fate
from edge.values import ShredReason


def what_if_instant(text: str, now: datetime, option: str) -> datetime:
    """`+DURATION` from now (by the trusted clock) or an ISO 8601 date or time."""
    if text.startswith("+"):
        try:
            return now + parse_duration(text[1:])
        except ValueError as exc:
            raise UsageError(f"{option} {text!r}: after the + give {exc}", setting=option) from None
    instant = parse_instant(text, option)
    assert instant is not None
    return instant


def print_forecast(fates: list[Fate], now: datetime, at: datetime) -> None:
    """What goes by `at` and what is still kept then, each with when and why (local time)."""
    gone = [fate for fate in fates if fate.at <= at]
    kept = [fate for fate in fates if fate.at > at]
    ahead = at - now
    print(
        f"what-if at {local(at)} ({'in ' + human(ahead) if ahead.total_seconds() > 0 else 'now'}), by the trusted clock; nothing is changed"
    )
    for title, group in ((f"shredded by then ({len(gone)})", gone), (f"still kept then ({len(kept)})", kept)):
        print(title + ":")
        for fate in group:
            when = "overdue: at the next sweep" if fate.at <= now else local(fate.at)
            held = f"{fate.sessions} session(s)" if fate.what != "voiceprint" else "enrolled voice"
            print(f"  {when:<28} {fate.profile:<10} {fate.what:<11} {held:<16} {_WHY[fate.reason]}")
        if not group:
            print("  nothing")


_WHY = {
    ShredReason.EXPIRED: "its retention ends",
    ShredReason.INACTIVE: "the profile unheard for inactive_after",
    ShredReason.FORGET: "a forget request a crash interrupted",
}
