"""The audit sink: what the parts that act on data (recorder, export, shredder) need
of the audit log. They depend on this protocol, not on the log itself, so retention
and audit never import each other. What they record are the events of edge/events.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from edge.events import AuditEvent


class AuditSink(Protocol):
    def append(self, event: AuditEvent) -> dict[str, Any]:
        """Record one event (durably), signed in the same write if it needs a checkpoint."""
        ...

    def append_many(self, events: Sequence[AuditEvent], checkpoint: bool = False) -> list[dict[str, Any]]:
        """Record events in order with one write; `checkpoint` ends the batch with a signature."""
        ...
