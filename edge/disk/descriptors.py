"""How many file descriptors this process may still open.

Every Wyoming client holds one. Had clients taken the last one, a retention sweep (the
keystore, the vault, the audit log, the files it deletes) would fail with "Too many open
files" and a recording would outlive its expiry. So the listeners' connections are capped
below the process's limit with a reserve the sweep can always use: no client action may
delay a shred.
"""

from __future__ import annotations

import os
import resource

RESERVED = 64
"""Descriptors no client may take: a sweep, the control socket's clients and the files one
utterance per core writes all fit (a sweep needs about ten)."""


def limit() -> int:
    """The process's soft limit (RLIMIT_NOFILE): systemd gives a service 1024."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def in_use() -> int:
    """Descriptors open now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return 0


def connection_cap(wanted: int, reserved: int = RESERVED) -> int:
    """At most `wanted` clients, and never so many that fewer than `reserved` descriptors
    would be left (0: the limit leaves no room for even one)."""
    return max(0, min(wanted, limit() - in_use() - reserved))
