"""What became of a session that is no longer kept, from the audit log: forgotten (when,
and by which request) or shredded (when, and why). So "no retained session" can say which."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from edge.events import EventError, ForgetFulfilled, ForgetRequested, Shred, read


def fate_of(entries: Iterable[dict[str, Any]], session: str) -> str | None:
    """A sentence on how `session` left the keystore, or None when the log never saw it go.
    A malformed event is passed over (`audit verify` names it)."""
    selectors: dict[str, str] = {}
    shredded: list[str] = []
    for entry in entries:
        try:
            event = read(entry["type"], entry["fields"])
        except EventError:
            continue
        when = _when(entry)
        match event:
            case ForgetRequested():
                selectors[event.request] = event.selector
            case ForgetFulfilled() if session in event.sessions:
                asked = selectors.get(event.request, "a forget request")
                return f"it was forgotten at {when} (the request to forget {asked}; `edge-agent audit show --type forget.fulfilled`)"
            case Shred() if session in event.sessions:
                shredded.append(f"its {event.kind} was shredded at {when} ({event.reason})")
    return "; ".join(shredded) or None


def _when(entry: dict[str, Any]) -> str:
    try:
        return datetime.fromisoformat(str(entry["wall"])).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return str(entry["wall"])
