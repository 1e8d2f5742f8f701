"""Crash points for the fault campaign (tests/test_faults.py, scripts/fault-campaign.py).

A crash point is a named place where a power cut or `kill -9` would hurt most. With
EDGE_CRASH_AT="NAME:N" in the environment, the process kills itself with SIGKILL
the Nth time it reaches NAME (no cleanup, no flush: like a power cut for everything
not yet fsynced). Unset, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "audio.chunk",  # a chunk of sealed audio was just written
    "session.finish",  # audio sealed, transcript not yet
    "replace.temp",  # a replacement (keystore, root key file) is in its temp file
    "replace.renamed",  # renamed over the old file, folder not yet fsynced
    "ratchet.staged",  # new root staged in the vault, keystore not yet re-sealed
    "shred.keys",  # bucket keys destroyed, ciphertext not yet deleted
    "shred.files",  # some ciphertext of a shredded bucket deleted
    "audit.torn",  # half an audit line written (a torn write)
    "migrate.filled",  # a v1 keystore converted into a temporary v2 file, not yet published
    "migrate.moved",  # `vault migrate`: the keystore sealed under the TPM's root, the old root not yet destroyed
    "rewind.dated",  # `clock rewind`: the keystore's instants moved back and committed, the clock's mark not yet
    "rewind.marked",  # the clock's mark moved back, the rewind not yet recorded as finished
)

_armed: dict[str, int] = {}
_spec = os.environ.get("EDGE_CRASH_AT", "")
if _spec:
    _name, _, _count = _spec.partition(":")
    if _name not in POINTS:
        raise SystemExit(f"EDGE_CRASH_AT={_spec!r}: unknown crash point; the points are: {', '.join(POINTS)}")
    _armed[_name] = int(_count or "1")


def crash_point(name: str) -> None:
    """Die here (SIGKILL) if armed for this name and this is the armed hit."""
    if name in _armed:
        _armed[name] -= 1
        if _armed[name] == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    """Whether the next crash_point(name) kills (for torn writes, which must write half first)."""
    return _armed.get(name) == 1
