"""Who may still sign the log's tail: the lines after its last checkpoint.

A writer signs what it wrote at the end of each session and command (docs/FORMATS.md
section 6). Until then it holds a shared flock on audit.jsonl, taken before it writes a
line it has not signed and let go once a checkpoint follows. An exclusive flock that
succeeds therefore proves that no process that could still sign the tail is alive: its
writer was killed (kill -9, a power cut) or edge never wrote those lines. The kernel lets
go of a dead process's flock, so no pid is trusted and none can be reused.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edge.disk.files import open_in, why
from edge.disk.layout import AUDIT_LOG
from edge.errors import StorageError


class TailHold:
    """One writer's shared lock on the log (its own open file description)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd = -1
        self.held = False

    def take(self) -> None:
        """Before writing a line no checkpoint follows. Blocks only while a verifier or another
        writer's check holds the exclusive lock, for the time of one fstat."""
        if not self.held:
            fcntl.flock(self._open(), fcntl.LOCK_SH)
            self.held = True

    def release(self) -> None:
        """Once a checkpoint follows everything this writer wrote."""
        if self.held:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self.held = False

    def nobody_writing(self) -> bool:
        """Whether no process holds the tail (ask only under the data-folder lock and holding
        nothing: a writer's own lock would answer for it)."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True

    def _open(self) -> int:
        """The log, opened once and kept (a log replaced since is opened again, unless held)."""
        if self._fd >= 0 and (self.held or os.fstat(self._fd).st_nlink):
            return self._fd
        self.close()
        try:
            self._fd = open_in(self.data_dir, AUDIT_LOG, os.O_RDONLY | os.O_CREAT)
        except OSError as exc:
            raise StorageError(f"{self.data_dir / AUDIT_LOG}: cannot open the audit log: {why(exc)}") from None
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # lets go of the lock too
            self._fd, self.held = -1, False

    def __del__(self) -> None:
        self.close()


def still_written(fd: int, size: int) -> bool:
    """For a verifier that read `size` bytes of the log open as `fd` and found its tail
    unsigned: whether a writer may still sign it. True if one holds the tail now, or if the
    log grew since it was read (its writer signed and let go meanwhile)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    try:
        return os.fstat(fd).st_size != size
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
