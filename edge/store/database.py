"""Keystore v2's SQLite file: schema, connection settings, and the checks made before SQLite
opens anything (docs/FORMATS.md §3).

SQLite in WAL mode with synchronous=FULL gives what a hand-made journal would: a
transaction is durable once committed and, after a power cut, either whole or absent.
SQLite opens files by path, so the data folder's files are checked first (regular files,
no links); the folder itself is 0700 and the lock keeps other edge processes out.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from edge.disk.files import create_in, folder_fd
from edge.disk.layout import KEYSTORE_DB, KEYSTORE_DB_FILES
from edge.disk.versioned import KEYSTORE_V2
from edge.errors import KeystoreError, StorageError

PAGE_BYTES = 2048
"""Small pages: a session commit changes a handful of them (its row, three index entries, the
state), so each page written is mostly what changed (bytes per commit, flash wear); 2048
against 1024 halves the pages a purge frees (benchmarked both)."""
BUSY_SECONDS = 30.0
"""How long a connection waits for another process's SQLite lock (ours are taken under the
data-folder lock, so this covers only the moments SQLite itself needs)."""
APPLICATION_ID = 0x65646765
"""'edge': `PRAGMA application_id`, so `file` and a stranger can tell what the database is.

Sessions are stored in the order of the bucket that seals them, so a shred deletes whole
pages of them at once; the other indexes find a session by id and a bucket's members."""

SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE buckets (
    handle INTEGER PRIMARY KEY AUTOINCREMENT,
    lookup BLOB NOT NULL UNIQUE,
    sealed BLOB NOT NULL
);
CREATE TABLE sessions (
    sealer INTEGER NOT NULL,
    id TEXT NOT NULL,
    audio INTEGER,
    transcript INTEGER,
    sealed BLOB NOT NULL,
    PRIMARY KEY (sealer, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX sessions_by_id ON sessions (id);
CREATE INDEX sessions_by_audio ON sessions (audio) WHERE audio IS NOT NULL;
CREATE INDEX sessions_by_transcript ON sessions (transcript) WHERE transcript IS NOT NULL;
"""


class Connection(sqlite3.Connection):
    """A connection a keystore can keep a weak reference to (the base class cannot)."""


def inode(data_dir: Path) -> int | None:
    """The database file's inode (None: there is none); refuses a link or anything but a file
    in its place or in the place of its WAL and shared-memory files (they are opened by path).

    Only stat, never open: closing any descriptor of a database file drops every POSIX lock
    this process holds on it, SQLite's included, and another process could then take the
    WAL for abandoned and delete it under a live connection (sessions lost; found by
    tests/test_sealing.py::test_concurrent_writers_lose_nothing)."""
    found = None
    try:
        with folder_fd(data_dir) as folder:
            for name in KEYSTORE_DB_FILES:
                try:
                    status = os.stat(name, dir_fd=folder, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(status.st_mode):
                    raise KeystoreError(
                        f"{data_dir / name}: is not a regular file (a link?); edge opens only its own files here", path=data_dir / name
                    )
                if name == KEYSTORE_DB:
                    found = status.st_ino
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeystoreError(f"{data_dir}: cannot look at the keystore: {exc.strerror}", path=data_dir) from None
    return found


def fingerprint(data_dir: Path) -> bytes | None:
    """What any change to the database file changes (inode, size, mtime and ctime in ns), or
    None when there is none or only its WAL holds the latest commits (not at rest)."""
    try:
        with folder_fd(data_dir) as folder:
            if any(_exists(name, folder) for name in KEYSTORE_DB_FILES if name != KEYSTORE_DB):
                return None
            status = os.stat(KEYSTORE_DB, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return f"{status.st_ino} {status.st_size} {status.st_mtime_ns} {status.st_ctime_ns}\n".encode()


def _exists(name: str, folder: int) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def connect(data_dir: Path, readonly: bool) -> sqlite3.Connection:
    """A connection to DATA_DIR/keystore.db (FileNotFoundError: there is none). Autocommit
    mode: transactions are begun and ended explicitly."""
    path = data_dir / KEYSTORE_DB
    if inode(data_dir) is None:
        raise FileNotFoundError(path)
    try:
        connection = sqlite3.connect(
            f"file:{quote(str(path))}?mode={'ro' if readonly else 'rw'}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_SECONDS,
            factory=Connection,
        )
        connection.execute("PRAGMA synchronous = FULL")  # a commit (a ratchet above all) survives a power cut
        connection.execute("PRAGMA secure_delete = FAST")  # freed cells zeroed where that costs no I/O (rows are sealed anyway)
        connection.execute("PRAGMA journal_size_limit = 4194304")
        return connection
    except sqlite3.DatabaseError as exc:
        raise unreadable(path, exc) from None


def close_at_rest(connection: sqlite3.Connection) -> None:
    """Copy the WAL into the database and close: when the last connection closes, SQLite
    removes the WAL and shared-memory files, so the data folder holds one file at rest."""
    try:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    except sqlite3.Error:
        pass
    connection.close()  # the last connection to close copies the WAL in and removes it


def copy_in_memory(data_dir: Path) -> sqlite3.Connection:
    """The whole database copied into memory, for read-only commands (call under the lock).
    At rest (no WAL) it is opened immutable, so nothing is created beside it; while an agent
    runs, the WAL and shared memory it keeps are read as they are."""
    path = data_dir / KEYSTORE_DB
    at_rest = not (data_dir / f"{KEYSTORE_DB}-wal").exists()
    source = sqlite3.connect(f"file:{quote(str(path))}?mode=ro{'&immutable=1' if at_rest else ''}", uri=True)
    try:
        copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        source.backup(copy)
        return copy
    finally:
        source.close()


def build(data_dir: Path, temp: str) -> sqlite3.Connection:
    """A new database in a temporary file beside the keystore, to be filled and renamed into
    place (edge.disk.files.publish_in): so DATA_DIR/keystore.db is never there half-made,
    and one that does not open is damaged, never "new". No journal: a crash just leaves a
    temporary file that the next writer destroys."""
    create_in(data_dir, temp).close()
    connection = sqlite3.connect(f"file:{quote(str(data_dir / temp))}?mode=rw", uri=True, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA page_size = {PAGE_BYTES}")
    connection.execute("PRAGMA journal_mode = OFF")
    return connection


def finish_build(connection: sqlite3.Connection) -> None:
    """Put the built database in WAL mode (recorded in its header, so no later connection
    has to change it while others have it open) and close it."""
    connection.execute("PRAGMA journal_mode = WAL")
    connection.close()


def memory() -> sqlite3.Connection:
    """An empty keystore in memory: what read-only commands see before any writer ran, or
    while a v1 keystore waits to be migrated by the next writer."""
    connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    initialise(connection)
    return connection


def initialised(connection: sqlite3.Connection) -> bool:
    """Whether the schema is there (a crash while a new file was created leaves it empty)."""
    return connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is not None


def initialise(connection: sqlite3.Connection) -> None:
    """Create the schema (inside the caller's transaction: DDL in SQLite is transactional)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute(f"PRAGMA user_version = {KEYSTORE_V2.writes}")


def check_version(connection: sqlite3.Connection, path: Path) -> None:
    application, version = (
        connection.execute("PRAGMA application_id").fetchone()[0],
        connection.execute("PRAGMA user_version").fetchone()[0],
    )
    if application != APPLICATION_ID:
        raise KeystoreError(
            f"{path}: is not an edge keystore (its SQLite application id is {application:#x}, not {APPLICATION_ID:#x}). "
            "Nothing was changed.",
            path=path,
        )
    KEYSTORE_V2.require(version, path)


def failed(path: Path, exc: sqlite3.Error) -> StorageError | KeystoreError:
    """A project error for what SQLite raised (nothing of the transaction was committed). Only
    a database that is not one, or is corrupt, is called damaged: advice to move it aside must
    never follow a mere busy or full disk."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return StorageError(f"{path}: the disk is full, so the keystore could not be written; nothing of this change was kept", path=path)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return KeystoreError(f"{path}: the keystore is busy (another process holds it); nothing was changed: try again", path=path)
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_AUTH):
        return StorageError(
            f"{path}: the keystore cannot be opened for writing ({exc}): check the owner and mode of the data folder", path=path
        )
    if code == sqlite3.SQLITE_IOERR:
        return StorageError(
            f"{path}: the disk failed while the keystore was read or written ({exc}); nothing of this change was kept", path=path
        )
    return unreadable(path, exc)


def refuse_orphaned_wal(data_dir: Path) -> None:
    """A WAL (or its index) left without its database (the database moved aside by hand): a
    new database must not be made beside it, since SQLite would replay it into the new one."""
    left = [name for name in KEYSTORE_DB_FILES[1:] if (data_dir / name).exists()]
    if left:
        raise KeystoreError(
            f"{data_dir / left[0]}: is left from a keystore that is no longer there; move it aside with that keystore "
            f"(mv {data_dir / left[0]} {data_dir / KEYSTORE_DB}.damaged{left[0][len(KEYSTORE_DB) :]}); nothing was changed",
            path=data_dir / left[0],
        )


def unreadable(path: Path, exc: Exception) -> KeystoreError:
    return KeystoreError(
        f"{path}: the keystore cannot be opened ({exc}). It is damaged or not edge's; nothing was changed, and edge will "
        f"not record until it opens. To start afresh, move it aside (mv {path} {path}.damaged; the same for {path}-wal and {path}-shm).",
        path=path,
    )
