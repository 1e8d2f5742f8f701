"""Unix sockets edge serves on (the control socket, Wyoming listeners)."""

from __future__ import annotations

import errno
import socket
import stat
from pathlib import Path


def socket_answers(path: Path) -> bool:
    """True when a live server owns `path` (as opposed to a socket left by a crash)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError as exc:
        return exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK)
    finally:
        probe.close()


def is_other_file(path: Path) -> bool:
    """Something that is not a socket sits at `path` (never replaced: it is not ours)."""
    try:
        return not stat.S_ISSOCK(path.lstat().st_mode)
    except FileNotFoundError:
        return False
