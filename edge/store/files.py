"""Private files: folders 0700, files 0600, atomic replacement, one writer at a time."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

from edge.errors import EdgeError, UsageError
from edge.faults import crash_point


class StorageError(EdgeError):
    """A file or folder edge keeps could not be written or locked."""


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) as 0700; tighten an existing folder we own to 0700."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise StorageError(f"{path}: cannot create a private folder there: {exc.strerror}") from None
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: write a 0600 temp file, fsync, rename, fsync the folder.
    A crash leaves either the old or the new content, never a mix."""
    private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:  # os.write raises ENOSPC when the disk is full
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point("replace.temp")
        os.replace(temp, path)
        crash_point("replace.renamed")
        fsync_dir(path.parent)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise StorageError(f"{path}: cannot write: {why(exc)}") from None


def why(exc: OSError) -> str:
    """An OS error as a person would say it; a full disk is named as such."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "the disk is full (free some space, or move [device] data_dir to a larger disk)"
    return exc.strerror or str(exc)


def create_private_file(path: Path):
    """A new 0600 file for binary writing, unbuffered (each sealed chunk reaches the OS at
    once); refuses to reuse an existing name."""
    private_dir(path.parent)
    try:
        return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb", buffering=0)
    except OSError as exc:
        raise StorageError(f"{path}: cannot create: {why(exc)}") from None


def write_output(path: Path, data: bytes) -> None:
    """Write a file the user asked for (0600); a bad destination is their error, said plainly."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write there: {exc.strerror}") from None


class DataLock:
    """An exclusive lock on the data folder: the agent and CLI commands take turns.

    Re-entrant within a thread and exclusive between threads and processes, so code
    holding it (a keystore transaction) can call code that takes it (the audit log)."""

    _held: dict[Path, tuple[int, int]] = {}  # path -> (fd, depth), owned by _guards[path]
    _guards: dict[Path, threading.RLock] = {}
    _registry = threading.Lock()

    def __init__(self, data_dir: Path) -> None:
        self.path = private_dir(data_dir).resolve() / "lock"
        with DataLock._registry:
            self._guard = DataLock._guards.setdefault(self.path, threading.RLock())

    def __enter__(self) -> DataLock:
        self._guard.acquire()
        fd, depth = DataLock._held.get(self.path, (-1, 0))
        if depth == 0:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                self._guard.release()
                raise StorageError(f"{self.path}: cannot open the data folder's lock: {exc.strerror}") from None
            fcntl.flock(fd, fcntl.LOCK_EX)
        DataLock._held[self.path] = (fd, depth + 1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        fd, depth = DataLock._held[self.path]
        if depth == 1:
            del DataLock._held[self.path]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        else:
            DataLock._held[self.path] = (fd, depth - 1)
        self._guard.release()
