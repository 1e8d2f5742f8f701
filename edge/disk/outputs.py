"""Files the user asks for (exports, identities, checkpoints, reports).

They are written only to a regular file or a new name: never through a link, into a
FIFO or a device, or into the data folder (plaintext must never land beside the
ciphertext). A temporary file is created exclusively beside the destination and renamed
over it only when complete, so nobody can plant it and nothing partial is left.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from edge.disk.files import folder_fd, why
from edge.errors import UsageError


def check_output(path: Path, not_inside: Path | None = None) -> Path:
    """Refuse a destination that is a folder, a link, a FIFO, a device or socket, or inside
    the data folder (plaintext must never land beside the ciphertext)."""
    text = str(path)
    if text in ("", ".") or text.endswith("/"):
        raise UsageError(f"{text!r} is a folder, not a file name; give the file to write inside it (such as out.wav)")
    try:
        info = path.lstat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise UsageError(f"{path}: cannot write there: {exc.strerror}") from None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise UsageError(f"{path} is a symbolic link; edge writes only to a regular file or a new name")
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{path} is a folder, not a file name; give the file to write inside it")
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path} is not a regular file (a FIFO, device or socket); choose a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{path}: the folder {parent} does not exist")
    if not_inside is not None:
        inside = not_inside.resolve()
        if parent.resolve() == inside or inside in parent.resolve().parents:
            raise UsageError(f"{path} is inside the data folder ({not_inside}); edge keeps only ciphertext there. Write it somewhere else.")
    return path


def write_output(path: Path, data: bytes, not_inside: Path | None = None) -> None:
    """Write a file the user asked for (0600), replacing a regular file atomically."""
    with output_file(path, not_inside) as handle:
        handle.write(data)


def write_secret(path: Path, data: bytes, not_inside: Path | None = None) -> None:
    """Write a secret the user asked for into a *new* 0600 file: an existing file is refused
    (it might keep a looser mode, or another user's hands on it)."""
    check_output(path, not_inside)
    try:
        with folder_fd(path.parent) as folder:
            fd = os.open(path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
    except FileExistsError:
        raise UsageError(f"{path} exists already; a secret key is only written to a new file: delete it or choose another name") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot write there: {why(exc)}") from None


@contextmanager
def output_file(path: Path, not_inside: Path | None = None) -> Iterator[BinaryIO]:
    """A new 0600 temporary file beside `path` (".NAME.PID.RANDOM.partial", created
    exclusively, so nobody can plant it), renamed over `path` only when the body succeeds."""
    check_output(path, not_inside)
    temp = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    try:
        with folder_fd(path.parent) as folder:
            _remove_stale_partials(folder, path.name)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    yield handle
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
                os.fsync(folder)
            except BaseException:
                try:
                    os.unlink(temp, dir_fd=folder)
                except FileNotFoundError:
                    pass
                raise
    except OSError as exc:
        raise UsageError(f"{path}: cannot write there: {why(exc)}") from None


def _remove_stale_partials(folder: int, name: str) -> None:
    """Plaintext left by an export that was killed mid-write: ours (same user), with this
    name, from a process that is gone. Anything else is left alone."""
    prefix = f".{name}."
    with os.scandir(folder) as listing:
        entries = list(listing)
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".partial")):
            continue
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if pid.isdigit() and stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and not _alive(int(pid)):
            try:
                os.unlink(entry.name, dir_fd=folder)
            except FileNotFoundError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
