"""What became of a session that is no longer kept, from the audit log: forgotten (when,
and by which request) or shredded (when, and why). So "no retained session" can say which."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any


def fate_of(entries: Iterable[dict[str, Any]], session: str) -> str | None:
    """A sentence on how `session` left the keystore, or None when the log never saw it go."""
    selectors: dict[str, str] = {}
    shredded: list[str] = []
    for entry in entries:
        fields, kind = entry["fields"], entry["type"]
        when = _when(entry)
        if kind == "forget.requested":
            selectors[str(fields.get("request"))] = str(fields.get("selector"))
        elif kind == "forget.fulfilled" and session in fields.get("sessions", ()):
            asked = selectors.get(str(fields.get("request")), "a forget request")
            return f"it was forgotten at {when} (the request to forget {asked}; `edge-agent audit show --type forget.fulfilled`)"
        elif kind == "shred" and session in fields.get("sessions", ()):
            shredded.append(f"its {fields.get('kind')} was shredded at {when} ({fields.get('reason')})")
    return "; ".join(shredded) or None


def _when(entry: dict[str, Any]) -> str:
    try:
        return datetime.fromisoformat(str(entry["wall"])).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return str(entry["wall"])
