"""One writer at a time: an exclusive lock on the data folder."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from edge.disk.files import open_in, private_dir
from edge.errors import StorageError


class DataLock:
    """An exclusive lock on the data folder: the agent and CLI commands take turns.

    Re-entrant within a thread and exclusive between threads and processes, so code
    holding it (a keystore transaction) can call code that takes it (the audit log).
    `create=False` (read-only commands) never makes the lock file: with none there, no
    writer has ever run, and there is nothing to wait for."""

    _held: dict[Path, tuple[int, int]] = {}  # path -> (fd, depth), owned by _guards[path]
    _guards: dict[Path, threading.RLock] = {}
    _registry = threading.RLock()  # re-entrant: a finalizer run by the collector inside may take it

    def __init__(self, data_dir: Path, create: bool = True) -> None:
        if create:
            private_dir(data_dir)
        self.root = data_dir.resolve()
        self.path = self.root / "lock"
        self.create = create
        with DataLock._registry:
            self._guard = DataLock._guards.setdefault(self.path, threading.RLock())

    def __enter__(self) -> DataLock:
        self._guard.acquire()
        fd, depth = DataLock._held.get(self.path, (-1, 0))
        if depth == 0:
            try:
                flags = os.O_RDWR | os.O_CREAT if self.create else os.O_RDONLY
                fd = open_in(self.root, "lock", flags)
            except FileNotFoundError:
                fd = -1  # read-only, and no writer ever ran here
            except (OSError, StorageError) as exc:
                self._guard.release()
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                raise StorageError(f"{self.path}: cannot open the data folder's lock: {reason}") from None
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX)
        DataLock._held[self.path] = (fd, depth + 1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        fd, depth = DataLock._held[self.path]
        if depth == 1:
            del DataLock._held[self.path]
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        else:
            DataLock._held[self.path] = (fd, depth - 1)
        self._guard.release()
