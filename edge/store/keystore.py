"""The keystore: the one source of truth for what exists and when it dies.

Format v2 (docs/FORMATS.md §3): an SQLite database, DATA_DIR/keystore.db, whose rows are
sealed as edge.store.rows says. Transactions run under the data-folder lock and write only
the rows that changed. Everything else (schedules, status, reports) is derived from it.

Ratchet: destroying a bucket replaces the root, so no copy of a bucket row left anywhere
(WAL, free pages, a backup of the flash) can be opened once the old root is gone from the
vault, and neither can the session rows its identity sealed.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag

from edge.crypto.age import Identity
from edge.crypto.guarantee import ROOT_BYTES, Vault
from edge.disk import reserve
from edge.disk.files import create_in, destroy_temps, exists_in, private_dir, publish_in, read_in, unlink_durably_in, unlink_in
from edge.disk.layout import FILES_CLEAN, KEYSTORE, KEYSTORE_AT_REST, KEYSTORE_DB
from edge.disk.lock import DataLock
from edge.errors import KeystoreError, StorageError, VaultError
from edge.faults import crash_point
from edge.progress import Progress
from edge.store import database
from edge.store.legacy import LegacyKeystore, open_v1
from edge.store.records import Bucket, BucketBound
from edge.store.rows import RootKeys, state_document
from edge.store.tables import KeystoreData
from edge.values import DataKind


class Access(enum.Enum):
    """What a process may do to the data folder; only the agent's own start may decide that a
    missing root key is gone for good (and start afresh)."""

    READ = "read"
    """status, verify, report, doctor: never write anything, not even a lock file."""
    WRITE = "write"
    """purge, forget, export: change the keystore, but a missing root is an error."""
    AGENT = "agent"
    """The agent starting: a root that is gone (power cut) is recorded and a fresh keystore begun."""


Migrated = Callable[[int, int], None]
"""Told (sessions, buckets) when a v1 keystore was converted, just before the conversion is published."""

MIGRATION_CHUNK = 2000
"""Sessions converted from v1 between two reports of progress."""


class Keystore:
    """The keystore in DATA_DIR/keystore.db, opened under the data-folder lock."""

    def __init__(
        self,
        data_dir: Path,
        vault: Vault,
        on_root_lost: Callable[[str], None] | None = None,
        access: Access = Access.WRITE,
        on_migrated: Migrated | None = None,
        migration_progress: Progress | None = None,
    ) -> None:
        self.data_dir = data_dir if access is Access.READ else private_dir(data_dir)
        self.path = data_dir / KEYSTORE_DB
        self.vault = vault
        self.on_root_lost = on_root_lost
        """Called (under the lock, with the reason) when the agent finds its root gone, so the loss is audited."""
        self.on_migrated = on_migrated
        self.migration_progress = migration_progress
        """Told (sessions converted, sessions in all) while a v1 keystore is converted (a big
        one takes seconds here, longer on a Pi's SD card)."""
        self.access = access
        self._writer: sqlite3.Connection | None = None
        self._writer_file: int | None = None
        """The inode the writer connection has open (a keystore moved aside means a new connection)."""
        self._closer: Callable[[], object] | None = None
        self._readers: weakref.WeakSet[sqlite3.Connection] = weakref.WeakSet()
        """Connections of snapshots handed out; closed before the writer, so its close is the
        last and SQLite removes the WAL."""
        self._writer_checked: int | None = None
        """The inode the agent's start checked page by page (PRAGMA quick_check), or found at
        rest (KEYSTORE_AT_REST: checked by the agent that stopped cleanly, written by none since)."""
        self.root_lost: str | None = None
        """Why the root is gone, when the vault had none although a keystore existed (e.g. a
        power-off with the keyring vault): everything retained was shredded by that loss."""

    @property
    def readonly(self) -> bool:
        return self.access is Access.READ

    @contextmanager
    def transaction(self) -> Iterator[KeystoreData]:
        """Lock, open, let the caller change the data, commit what changed (nothing, if nothing did)."""
        if self.readonly:
            raise KeystoreError("the keystore was opened read-only")
        with DataLock(self.data_dir):
            data = self._open_writer()
            try:
                yield data
                data.flush()
                data.db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise database.failed(self.path, exc) from None
            finally:
                self._end(data)

    def read(self) -> KeystoreData:
        """A consistent snapshot, valid as long as the caller keeps it (its own read-only
        connection: a writer may commit meanwhile). A writable keystore first finishes what
        an open must (a migration, an interrupted ratchet, the agent's recovery from a lost root)."""
        with DataLock(self.data_dir, create=not self.readonly):
            if not self.readonly:
                with self.transaction():
                    pass
            return self._snapshot(copy=self.readonly)

    def peek(self) -> KeystoreData:
        """A snapshot copied into memory that writes nothing at all, not even the WAL (a full
        disk), and changes nothing (no migration, no recovery). Read-only commands get this from `read`."""
        with DataLock(self.data_dir, create=False):
            return self._snapshot(copy=True)

    def save(self, data: KeystoreData) -> None:
        """Make the data durable now, mid-transaction (a checkpoint before touching files)."""
        data.flush()
        data.db.execute("COMMIT")
        data.db.execute("BEGIN IMMEDIATE")

    def checkpoint(self) -> None:
        """Copy the WAL into the database and empty it (the agent does this when it stops, so
        the data folder is one file at rest)."""
        if self.readonly:
            return
        with DataLock(self.data_dir):
            if database.inode(self.data_dir) is not None:
                self._writer_connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Checkpoint and close the writer connection (done at exit anyway). The agent calls
        this when it stops cleanly: a keystore whose pages its start checked is then marked at
        rest, and the next start skips the check."""
        checked = self._writer_file is not None and self._writer_checked == self._writer_file
        if self._closer is not None:
            self._closer()
        self._writer = self._closer = self._writer_file = None
        if checked and self.access is Access.AGENT:
            self._mark_at_rest()

    def _mark_at_rest(self) -> None:
        """KEYSTORE_AT_REST, naming the database file as it is (database.fingerprint), if no
        connection has it open any more (SQLite removes the WAL when the last one closes,
        after copying it in and syncing the database). Not made durable: a marker lost to a
        power cut only costs the next start its check."""
        with DataLock(self.data_dir):
            found = database.fingerprint(self.data_dir)
            if found is None or exists_in(self.data_dir, KEYSTORE_AT_REST):
                return
            try:
                with create_in(self.data_dir, KEYSTORE_AT_REST) as marker:
                    marker.write(found)
            except StorageError:
                unlink_in(self.data_dir, KEYSTORE_AT_REST)  # a full disk, say: the next start checks the pages

    def _leave_rest(self) -> None:
        """Before a writer's transaction (under the lock): the marker goes, durably, so a stop
        that is not clean from here on leaves none and the next agent's start checks every
        page. The agent's first open takes the keystore as checked only if the file is still
        exactly as the marker names it (anything that changed it since, it did not vouch for)."""
        marker = read_in(self.data_dir, KEYSTORE_AT_REST)
        if marker is None:
            return
        if self.access is Access.AGENT and self._writer_file is None and marker == database.fingerprint(self.data_dir):
            self._writer_checked = database.inode(self.data_dir)
        unlink_durably_in(self.data_dir, KEYSTORE_AT_REST)

    # -- buckets -------------------------------------------------------------------

    def new_bucket(self, data: KeystoreData, bucket_id: str, profile: str, kind: DataKind, expires: datetime) -> Bucket:
        """Create a bucket with a fresh identity (inside a transaction)."""
        identity = Identity.generate()
        bucket = Bucket(bucket_id, profile, kind, expires, identity.recipient.encode(), identity.secret)
        data.buckets[bucket_id] = bucket
        return bucket

    def identity(self, bucket: Bucket) -> Identity:
        """A bucket's private identity: only export, re-keying and verification need it."""
        identity = Identity(bucket.secret)
        if identity.recipient.encode() != bucket.recipient:
            raise KeystoreError(f"bucket {bucket.id}: its key does not match its public key (keystore damaged)")
        return identity

    def identities(self, bucket: Bucket) -> list[Identity]:
        """The current identity, and the retiring one while a re-key is under way."""
        found = [self.identity(bucket)]
        if bucket.retiring_identity is not None:
            found.append(Identity(bucket.retiring_identity))
        return found

    def start_rekey(self, data: KeystoreData, bucket_id: str) -> Bucket:
        """Give a bucket a fresh identity, keeping the old one as retiring (inside a transaction).
        A crash before `finish_rekey` leaves every file openable by one of the two. The session
        rows the bucket seals are sealed again under the new identity in the same commit."""
        bucket = data.buckets[bucket_id]
        if bucket.retiring_identity is not None:
            return bucket  # a re-key is already under way: finish that one first
        data.sessions.reseal_members(bucket_id)
        identity = Identity.generate()
        data.buckets[bucket_id] = replace(
            bucket, recipient=identity.recipient.encode(), secret=identity.secret, retiring_identity=bucket.secret
        )
        return data.buckets[bucket_id]

    def finish_rekey(self, data: KeystoreData, bucket_ids: list[str]) -> None:
        """Drop the retiring identities and ratchet, so no copy of them survives anywhere."""
        for bucket_id in bucket_ids:
            if bucket_id in data.buckets:
                data.buckets[bucket_id] = replace(data.buckets[bucket_id], retiring_identity=None)
        self.ratchet(data)

    def destroy_buckets(self, data: KeystoreData, bucket_ids: list[str]) -> None:
        """Forget these buckets, their keys and the sessions they seal, and ratchet the root
        (inside a transaction). After this returns, no copy of the keystore anywhere can yield
        those identities: the only root that opened the old copies is gone."""
        data.drop_buckets(bucket_ids)
        self.ratchet(data)

    # -- opening -------------------------------------------------------------------

    def _open_writer(self) -> KeystoreData:
        self.vault.scrub()  # stale copies of a root a crashed write left behind
        destroy_temps(self.data_dir, KEYSTORE)
        destroy_temps(self.data_dir, KEYSTORE_DB)  # a creation or migration a crash interrupted
        reserve.keep(self.data_dir)
        self._leave_rest()
        current, staged = self.vault.read("current"), self.vault.read("next")
        if database.inode(self.data_dir) is None:
            database.refuse_orphaned_wal(self.data_dir)
            try:
                self._create(read_in(self.data_dir, KEYSTORE), current, staged)
            except sqlite3.Error as exc:
                raise database.failed(self.path, exc) from None
            current, staged = self.vault.read("current"), self.vault.read("next")
        connection = self._writer_connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            self._check(connection)
            data = self._with_root(connection, current, staged, write=True)
            if read_in(self.data_dir, KEYSTORE) is not None:
                unlink_in(self.data_dir, KEYSTORE)  # a migration was published, then the process stopped
            return data
        except sqlite3.Error as exc:
            self._rollback(connection)
            raise database.failed(self.path, exc) from None
        except BaseException:
            self._rollback(connection)
            raise

    def _snapshot(self, copy: bool) -> KeystoreData:
        current, staged = self.vault.read("current"), self.vault.read("next")
        if database.inode(self.data_dir) is None:  # no writer has run yet, or a v1 keystore waits for one
            legacy = read_in(self.data_dir, KEYSTORE)
            return self._in_memory(self._legacy(legacy, current, staged) if legacy is not None else None, current)
        try:
            # read-only commands write nothing: they read a copy in memory; anyone else reads it live
            if copy:
                connection = database.copy_in_memory(self.data_dir)
            else:  # no long read transaction (it would pin the WAL); closed with the writer at the latest
                connection = database.connect(self.data_dir, readonly=True)
                self._readers.add(connection)
            self._check(connection)
            if copy and connection.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":  # in memory: quick
                raise database.unreadable(self.path, ValueError("its pages do not check out"))
            data = self._with_root(connection, current, staged, write=False)
            data.held_by = self  # the keystore (which closes this connection when it goes) lives as long
            return data
        except sqlite3.Error as exc:
            raise database.failed(self.path, exc) from None

    def _check(self, connection: sqlite3.Connection) -> None:
        if not database.initialised(connection):
            raise database.unreadable(self.path, ValueError("it holds no keystore: cut short?"))
        database.check_version(connection, self.path)
        if self.access is Access.AGENT and self._writer_checked != self._writer_file:  # once per start: fail closed
            problem = connection.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise database.unreadable(self.path, ValueError(problem))
            self._writer_checked = self._writer_file

    def _writer_connection(self) -> sqlite3.Connection:
        inode = database.inode(self.data_dir)
        if self._writer is None or inode is None or inode != self._writer_file:
            if self._closer is not None:
                self._closer()
            self._writer = database.connect(self.data_dir, readonly=False)
            self._writer_file = database.inode(self.data_dir)
            self._closer = weakref.finalize(self, _close_at_rest, self._writer, self._readers)  # also at exit
        return self._writer

    def _create(self, v1: bytes | None, current: bytes | None, staged: bytes | None) -> None:
        """DATA_DIR/keystore.db, made whole in a temporary file and renamed into place: empty,
        or converted from v1 (audited, counts only). A crash before the rename leaves v1 as it
        was and the next open tries again; after it, v1 is deleted."""
        unlink_durably_in(self.data_dir, FILES_CLEAN)  # files beside a new keystore (one moved aside, say) owe a scan
        found, records = self._legacy(v1, current, staged) if v1 is not None else (None, None)
        if found is not None:
            root = found
        elif current is not None and v1 is None:
            root = current
        else:  # nothing sealed under any root yet (or v1's root is gone: the agent starts afresh)
            if v1 is not None:  # nothing can open it: the loss is audited and v1 goes first
                if self.on_root_lost is not None:
                    self.on_root_lost(self.root_lost or "the root key is gone")
                unlink_in(self.data_dir, KEYSTORE)
                v1 = None
            root = os.urandom(ROOT_BYTES)
            self.vault.write("current", root)
        temp = f".{KEYSTORE_DB}.{os.getpid()}.tmp"
        connection = database.build(self.data_dir, temp)
        try:
            connection.execute("BEGIN")
            database.initialise(connection)
            data = self._filled(connection, root, records)
            if records is not None and self.on_migrated is not None:
                self.on_migrated(len(data.sessions), len(data.buckets))  # audited write-ahead
            crash_point("migrate.filled")
            connection.execute("COMMIT")
            database.finish_build(connection)
        finally:
            connection.close()
        publish_in(self.data_dir, temp, KEYSTORE_DB)
        if v1 is not None:
            unlink_in(self.data_dir, KEYSTORE)

    def _legacy(self, sealed: bytes, current: bytes | None, staged: bytes | None) -> tuple[bytes | None, LegacyKeystore | None]:
        """(root, records) of a v1 keystore; (None, None) when its root is gone and this is
        the agent's start (or a read-only look: nothing is there to show)."""
        for root in (current, staged):
            if root is None:
                continue
            try:
                return root, open_v1(root, sealed)
            except InvalidTag:
                continue
        if current is None and staged is None:
            self.root_lost = self.vault.why_missing()  # VaultError if maybe only invisible
            if self.access is Access.WRITE:
                raise VaultError(
                    f"{self.data_dir / KEYSTORE}: {self.root_lost}, so nothing retained can be opened again. The agent "
                    "records the loss and starts afresh when it next starts (systemctl start edge-agent); nothing was changed."
                )
            return None, None
        raise KeystoreError(
            f"{self.data_dir / KEYSTORE}: the v1 keystore cannot be opened with the vault's root key "
            f"({self.vault.level.backend}); nothing was changed. To start afresh, move it aside "
            f"(mv {self.data_dir / KEYSTORE} {self.data_dir / KEYSTORE}.damaged).",
            path=self.data_dir / KEYSTORE,
        )

    def _in_memory(self, legacy: tuple[bytes | None, LegacyKeystore | None] | None, current: bytes | None) -> KeystoreData:
        """What a read-only look sees where no v2 keystore exists yet: nothing, or v1's records."""
        root, records = legacy if legacy is not None else (current, None)
        return self._filled(database.memory(), root if root is not None else os.urandom(ROOT_BYTES), records)

    def _filled(self, connection: sqlite3.Connection, root: bytes, legacy: LegacyKeystore | None) -> KeystoreData:
        keys = RootKeys(root)
        empty = state_document({}, {}, bound=BucketBound(None, 0, False))  # no bucket yet: nothing to open to know
        connection.execute("INSERT INTO meta (name, value) VALUES ('state', ?)", (keys.seal_state(empty),))
        data = KeystoreData(connection, keys, empty)
        if legacy is not None:
            for bucket in legacy.buckets:
                data.buckets[bucket.id] = bucket
            data.buckets.flush()
            sessions = legacy.sessions
            for start in range(0, len(sessions), MIGRATION_CHUNK):
                for entry in sessions[start : start + MIGRATION_CHUNK]:  # a reference to a bucket v1 no longer had is dropped
                    data.sessions[entry.id] = entry
                data.sessions.flush()  # sealed row by row: this is the slow part
                if self.migration_progress is not None:
                    self.migration_progress(min(start + MIGRATION_CHUNK, len(sessions)), len(sessions))
            data.last_seen.update(legacy.last_seen)
            data.forgets.update(legacy.forgets)
            data.flush()
        return data

    def _with_root(self, connection: sqlite3.Connection, current: bytes | None, staged: bytes | None, write: bool) -> KeystoreData:
        row = connection.execute("SELECT value FROM meta WHERE name = 'state'").fetchone()
        if row is None:
            raise KeystoreError(f"{self.path}: the keystore has no state row (damaged); nothing was changed", path=self.path)
        for root in (current, staged):
            if root is None:
                continue
            keys = RootKeys(root)
            try:
                state = keys.open_state(row[0])
            except InvalidTag:
                continue
            if write and root is staged:  # a ratchet was interrupted after its commit
                self.vault.write("current", root)
            if write and staged is not None:
                self.vault.erase("next")
            return KeystoreData(connection, keys, state, write=write)
        if current is None and staged is None:
            return self._after_root_loss(connection, self.vault.why_missing(), write)  # VaultError if maybe only invisible
        raise KeystoreError(
            f"{self.path}: the keystore cannot be opened with the vault's root key "
            f"({self.vault.level.backend}). It belongs to another vault or is damaged; nothing was changed, and edge "
            f"will not record until it opens. What it protected can never be opened again: to start afresh, move it "
            f"aside (mv {self.path} {self.path}.damaged; the same for {self.path}-wal and -shm).",
            path=self.path,
        )

    def _after_root_loss(self, connection: sqlite3.Connection, reason: str, write: bool) -> KeystoreData:
        """No root anywhere but a keystore exists: the data can never be opened again. Only the
        agent's start records that and begins afresh; anything else says so and changes nothing."""
        self.root_lost = reason
        if not write:
            return self._in_memory(None, None)
        if self.access is not Access.AGENT:
            raise VaultError(
                f"{self.path}: {reason}, so nothing retained can be opened again. The agent records the "
                "loss and starts afresh when it next starts (systemctl start edge-agent); nothing was changed."
            )
        if self.on_root_lost is not None:
            self.on_root_lost(reason)  # write-ahead: a crash below only repeats it at the next start
        unlink_durably_in(self.data_dir, FILES_CLEAN)  # every session's files are orphans now: the next sweep scans
        connection.execute("DELETE FROM sessions")
        connection.execute("DELETE FROM buckets")
        root = os.urandom(ROOT_BYTES)
        data = KeystoreData(connection, RootKeys(root), state_document({}, {}))
        data.rekey_root(data.keys)
        connection.execute("COMMIT")  # then the vault: a crash in between leaves no root again, never a wrong one
        self.vault.write("current", root)
        connection.execute("BEGIN IMMEDIATE")
        return data

    # -- committing ----------------------------------------------------------------

    def ratchet(self, data: KeystoreData) -> None:
        """Replace the root (inside a transaction): whatever left the keystore since the last
        ratchet, such as a voiceprint, can no longer be opened from any copy of it."""
        root = os.urandom(ROOT_BYTES)
        data.rekey_root(RootKeys(root))
        self._switch_root(data, root)

    def move_root(self, data: KeystoreData, target: Vault) -> None:
        """Re-seal the keystore under a fresh root that `target` keeps, then destroy the old
        vault's roots (`vault migrate`; inside a transaction). The ratchet's two slots make it
        crash-safe: until the commit the old root opens the keystore, after it the target's.
        From here on this keystore uses `target`."""
        old, self.vault = self.vault, target
        self.ratchet(data)
        crash_point("migrate.moved")
        for slot in ("next", "current"):
            old.erase(slot)
        old.scrub()

    def _switch_root(self, data: KeystoreData, root: bytes) -> None:
        """Commit the data sealed under a new root: staged in the vault first, so a crash at
        any point leaves a keystore that one of the vault's two roots opens."""
        data.flush()
        self.vault.write("next", root)
        crash_point("ratchet.staged")
        data.db.execute("COMMIT")
        self.vault.write("current", root)
        self.vault.erase("next")
        data.db.execute("BEGIN IMMEDIATE")

    def _end(self, data: KeystoreData) -> None:
        connection = data.db
        data.close()
        self._rollback(connection)

    @staticmethod
    def _rollback(connection: sqlite3.Connection) -> None:
        if connection.in_transaction:
            connection.execute("ROLLBACK")


def _close_at_rest(connection: sqlite3.Connection, readers: weakref.WeakSet[sqlite3.Connection]) -> None:
    """Readers first, so the writer's close is the last and SQLite removes the WAL. It may run
    from the garbage collector at any point of any thread, so it takes no lock of ours (a
    lock held just then by the same thread would never be released)."""
    for reader in list(readers):
        reader.close()
    database.close_at_rest(connection)
