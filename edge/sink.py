"""The audit sink: what the parts that act on data (recorder, export, shredder) need
of the audit log. They depend on this protocol, not on the log itself, so retention
and audit never import each other."""

from __future__ import annotations

from typing import Any, Protocol


class AuditSink(Protocol):
    def append(self, event_type: str, *, checkpoint: bool = False, **fields: Any) -> dict[str, Any]:
        """Record one event (durably); `checkpoint` signs it in the same write."""
        ...

    def append_many(self, events: list[tuple[str, dict[str, Any]]], checkpoint: bool = False) -> list[dict[str, Any]]:
        """Record events in order with one write; `checkpoint` ends the batch with a signature."""
        ...
