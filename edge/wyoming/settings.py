"""A Wyoming server's settings: its limits on time, cores, connections and event sizes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edge.wyoming.framing import Limits


@dataclass(frozen=True)
class ServerSettings:
    idle_timeout: float = 10.0
    """Seconds a client may send nothing (between events) before it is disconnected."""
    slots: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Utterances decoded at once: one per core. One more gets error "busy"."""
    max_clients: int = 64
    """Connections open at once across every listener, and never so many that fewer than
    `edge.disk.descriptors.RESERVED` file descriptors are left for shredding; more are
    closed as they arrive."""
    close_grace: float = 2.0
    """Seconds a finished connection may take to deliver its last answer; a client that does
    not read it by then is cut off (its socket aborted, its descriptor freed)."""
    limits: Limits = field(default_factory=Limits)
