"""Process hardening the agent applies to itself before it hears any audio.

A core dump or a debugger attached by another user could copy audio and keys out
of RAM. The agent therefore marks itself non-dumpable (which also stops other
non-root processes of the same user from ptrace-attaching) and sets its core-size
limit to zero. The systemd unit does the same from outside (LimitCORE=0).
"""

from __future__ import annotations

import ctypes
import resource

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4

_libc = ctypes.CDLL(None, use_errno=True)


def make_non_dumpable() -> None:
    """No core dumps, no ptrace by same-user processes, for the rest of this process."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def is_dumpable() -> bool:
    return bool(_libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1)
