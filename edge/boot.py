"""This boot's identity: which kernel boot a mark, a key or an audit event belongs to."""

import functools
from pathlib import Path


@functools.cache
def boot_id() -> str:
    """The kernel's boot id (fixed until reboot; read once per process)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
