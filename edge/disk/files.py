"""Private files: folders 0700, files 0600, atomic replacement.

Inside the data folder no link is ever followed. Every file there is opened relative
to the folder's descriptor, one component at a time, with O_NOFOLLOW: a `recordings`
that is a symlink to /etc is refused, never written into or purged as root. (The data
folder's own path may pass through links an administrator made.)

When edge runs as root in a folder that belongs to another user (a parent running
`sudo edge-agent purge` on the service's folder), whatever it creates there is given to
that folder's owner, so the service can still use it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from edge.errors import StorageError
from edge.faults import crash_point

log = logging.getLogger(__name__)
_WARNED_OPEN: set[Path] = set()
"""Folders of the user's whose open mode was already pointed out."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def why(exc: OSError) -> str:
    """An OS error as a person would say it; a full disk is named as such."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "the disk is full (free some space, or move [device] data_dir to a larger disk)"
    return exc.strerror or str(exc)


def _is_link(folder: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _refused(path: Path, exc: OSError, link: bool = False) -> StorageError:
    if exc.errno == errno.ELOOP or link:
        return StorageError(
            f"{path} is a symbolic link; edge never follows links inside its data folder "
            "(one could point anywhere, such as /etc). Remove the link.",
            path=path,
        )
    if exc.errno == errno.ENOTDIR:
        return StorageError(f"{path}: something that is not a folder stands where edge keeps a folder; move it away", path=path)
    return StorageError(f"{path}: {why(exc)}", path=path)


def private_dir(path: Path, tighten: bool = True) -> Path:
    """Create `path` (and parents) as 0700; tighten an existing folder to 0700 (edge's own,
    such as the data folder), or with `tighten=False` only warn (a folder of the user's,
    such as the one holding the file vault's key: edge never changes a mode it did not set)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = path.stat().st_mode
        if mode & 0o077 and tighten:
            os.chmod(path, 0o700)
        elif mode & 0o077 and path not in _WARNED_OPEN:
            _WARNED_OPEN.add(path)  # once per process: the vault writes at every ratchet
            log.warning(
                "%s is mode %04o: others can see which files it holds (the files edge writes there are 0600); chmod 700 %s",
                path,
                mode & 0o777,
                path,
            )
    except OSError as exc:
        raise StorageError(f"{path}: cannot create a private folder there: {exc.strerror}", path=path) from None
    return path


def _adopt(fd: int, folder: int) -> None:
    """As root, give what was just created to the owner of its folder (the service user)."""
    if os.geteuid() != 0:
        return
    owner, mine = os.fstat(folder), os.fstat(fd)
    if (mine.st_uid, mine.st_gid) != (owner.st_uid, owner.st_gid):
        os.fchown(fd, owner.st_uid, owner.st_gid)


@contextmanager
def folder_fd(root: Path, parts: Sequence[str] = (), create: bool = False, tighten: bool = True) -> Iterator[int]:
    """A descriptor of root/parts..., following no link below `root`. With `create`, missing
    folders are made (0700), and `root` tightened to 0700 unless `tighten` is false. A
    missing folder otherwise raises FileNotFoundError."""
    if create:
        private_dir(root, tighten)
    try:
        fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _refused(root, exc) from None
    try:
        for index, part in enumerate(parts):
            try:
                try:
                    child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass  # made by another writer a moment ago
                    child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                    _adopt(child, fd)
            except FileNotFoundError:
                raise
            except OSError as exc:  # O_DIRECTORY | O_NOFOLLOW on a link says ENOTDIR
                raise _refused(root.joinpath(*parts[: index + 1]), exc, _is_link(fd, part)) from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _split(relative: str) -> tuple[list[str], str]:
    parts = relative.split("/")
    return parts[:-1], parts[-1]


def open_in(root: Path, relative: str, flags: int, mode: int = 0o600) -> int:
    """Open root/relative without following any link below root; only a regular file opens.
    With O_CREAT, missing folders are made and a new file belongs to the folder's owner."""
    folders, name = _split(relative)
    creating = bool(flags & os.O_CREAT)
    with folder_fd(root, folders, create=creating) as folder:
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=folder)
        except (FileNotFoundError, FileExistsError):
            raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _refused(root / relative, exc, _is_link(folder, name)) from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StorageError(f"{root / relative}: not a regular file (a folder, FIFO or device?); move it away", path=root / relative)
            os.set_blocking(fd, True)
            if creating:
                _adopt(fd, folder)
        except BaseException:
            os.close(fd)
            raise
        return fd


def read_in(root: Path, relative: str) -> bytes | None:
    """The whole file, or None when it does not exist."""
    try:
        fd = open_in(root, relative, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"{root / relative}: cannot read: {why(exc)}", path=root / relative) from None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def reader_in(root: Path, relative: str, buffering: int = -1) -> BinaryIO:
    """A file opened for reading (FileNotFoundError when missing)."""
    return os.fdopen(open_in(root, relative, os.O_RDONLY), "rb", buffering=buffering)


def create_in(root: Path, relative: str) -> BinaryIO:
    """A new 0600 file for binary writing, unbuffered (each sealed chunk reaches the OS at
    once); refuses to reuse an existing name."""
    try:
        fd = open_in(root, relative, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except OSError as exc:
        raise StorageError(f"{root / relative}: cannot create: {why(exc)}", path=root / relative) from None
    return os.fdopen(fd, "wb", buffering=0)


LOCKED = 0
"""The temp files' number for a writer holding the data-folder lock (no other writer can
share it): their names are then known, so a shred deletes them by name."""


def write_atomic_in(root: Path, relative: str, data: bytes, tighten: bool = True, writer: int | None = None) -> None:
    """Replace root/relative with `data`: a 0600 temp file, fsync, rename, fsync the folder.
    A crash leaves either the old or the new content, never a mix (and maybe the temp file
    ".NAME.N.tmp", N the process id or `writer`, which `destroy_temps` removes)."""
    folders, name = _split(relative)
    temp = f".{name}.{os.getpid() if writer is None else writer}.tmp"
    try:
        with folder_fd(root, folders, create=True, tighten=tighten) as folder:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
            except FileExistsError:  # left by an earlier process with our PID
                os.unlink(temp, dir_fd=folder)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
            try:
                _adopt(fd, folder)
                view = memoryview(data)
                while view:  # os.write raises ENOSPC when the disk is full
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                os.close(fd)
                os.unlink(temp, dir_fd=folder)
                raise
            os.close(fd)
            crash_point("replace.temp")
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            crash_point("replace.renamed")
            os.fsync(folder)
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(f"{root / relative}: cannot write: {why(exc)}", path=root / relative) from None


def publish_in(root: Path, temp: str, name: str) -> None:
    """Make a finished temporary file (written by someone else, e.g. SQLite) durable and
    rename it over `name` in the same folder, then make the rename durable."""
    try:
        with folder_fd(root) as folder:
            fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            os.fsync(folder)
    except OSError as exc:
        raise StorageError(f"{root / name}: cannot write: {why(exc)}", path=root / name) from None


def atomic_write(path: Path, data: bytes) -> None:
    """`write_atomic_in` for a file anywhere (e.g. the file vault's key), in a folder that is
    the user's: its mode is left as it is (a warning says when it is open)."""
    write_atomic_in(path.parent, path.name, data, tighten=False)


def unlink_in(root: Path, relative: str) -> bool:
    """Delete root/relative (a link is deleted, never followed); False when it was not there."""
    folders, name = _split(relative)
    try:
        with folder_fd(root, folders) as folder:
            os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        return False
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(f"{root / relative}: cannot delete: {why(exc)}", path=root / relative) from None
    return True


def unlink_each_in(root: Path, folder: str, names: Iterable[str], each: Callable[[], None] = lambda: None) -> int:
    """Delete these files of root/folder through one descriptor of the folder (a shred may
    delete 200,000); calls `each` after every deletion. Returns how many were there."""
    deleted = 0
    try:
        with folder_fd(root, [folder]) as fd:
            for name in names:
                if "/" in name or name in (".", ".."):
                    raise StorageError(f"{root / folder / name}: not a file name edge makes")
                try:
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    continue
                deleted += 1
                each()
    except FileNotFoundError:
        return deleted
    except OSError as exc:
        raise StorageError(f"{root / folder}: cannot delete: {why(exc)}", path=root / folder) from None
    return deleted


def sync_folder_in(root: Path, folder: str = "") -> None:
    """Make the deletions and renames done in root/folder (root itself for "") durable
    (nothing when it is missing)."""
    try:
        with folder_fd(root, [folder] if folder else []) as fd:
            os.fsync(fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"{root / folder}: cannot sync: {why(exc)}", path=root / folder) from None


def unlink_durably_in(root: Path, name: str) -> None:
    """Delete root/name, if there, and make that durable before returning (a marker whose
    absence a later commit relies on)."""
    if unlink_in(root, name):
        sync_folder_in(root)


def files_in(root: Path, folder: str = "") -> list[str]:
    """Names of the regular files in root/folder (links, folders and devices are left out);
    [] when the folder does not exist."""
    try:
        with folder_fd(root, [folder] if folder else []) as fd, os.scandir(fd) as entries:
            return [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def names_in(root: Path, folder: str) -> list[str]:
    """Every name in root/folder, whatever it is (through a descriptor of the folder opened
    without following links); [] when the folder does not exist."""
    try:
        with folder_fd(root, [folder]) as fd:
            return os.listdir(fd)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"{root / folder}: cannot list: {why(exc)}", path=root / folder) from None


def entries_in(root: Path) -> list[str]:
    """Every name in the folder, whatever it is; [] when it does not exist."""
    try:
        return os.listdir(root)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"{root}: cannot list: {why(exc)}", path=root) from None


def exists_in(root: Path, relative: str) -> bool:
    folders, name = _split(relative)
    try:
        with folder_fd(root, folders) as folder:
            os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def size_in(root: Path, relative: str) -> int:
    """Size of a file (0 when missing), without following a link."""
    folders, name = _split(relative)
    try:
        with folder_fd(root, folders) as folder:
            return os.stat(name, dir_fd=folder, follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0


def destroy_temps(folder: Path, name: str) -> int:
    """Overwrite and delete the temporary copies of `name` (".NAME.PID.tmp") that a crashed
    atomic write left in `folder`. Call it under the data-folder lock, where no other writer
    is active: a stale copy of a root key would otherwise open old keystore copies forever."""
    prefix, destroyed = f".{name}.", 0
    try:
        names = files_in(folder)
    except StorageError:
        return 0
    for entry in names:
        middle = entry[len(prefix) : -len(".tmp")]
        if not (entry.startswith(prefix) and entry.endswith(".tmp") and middle.isdigit()):
            continue
        try:
            fd = open_in(folder, entry, os.O_WRONLY)
            try:
                os.write(fd, bytes(os.fstat(fd).st_size))  # helps on disks, not on flash
                os.fsync(fd)
            finally:
                os.close(fd)
            unlink_in(folder, entry)
            destroyed += 1
        except (OSError, StorageError):
            continue
    return destroyed
