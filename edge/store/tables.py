"""Keystore v2's data as the code sees it: sessions and buckets by id, read from the database
on demand and written back at commit, only what changed.

A session commit therefore costs the rows it touches, not the number of sessions kept.
Rows are sealed as edge.store.rows says; the clear columns hold only random handles and
which of a session's buckets are still alive, so a shred deletes and nulls rows in SQL
without opening any of them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from edge.errors import KeystoreError
from edge.store.lazy import LazyTable
from edge.store.records import Bucket, BucketBound, ClockRewind, PendingForget, SessionEntry, Voiceprint
from edge.store.rows import RootKeys, seal, session_context, session_document, session_from, session_key, state_document, state_from, unseal

CHUNK = 500
"""Handles per SQL statement (SQLite allows 32766 parameters; small chunks keep statements cheap)."""
SURVIVORS_ASIDE = 20_000
"""The most session rows a shred holds in memory to empty the table around them (~4 MB)."""


def _chunked(handles: list[int]) -> list[tuple[list[int], str]]:
    """The handles in CHUNK-sized pieces, each with its `?,?,...` for an `IN (...)`."""
    pieces = [handles[start : start + CHUNK] for start in range(0, len(handles), CHUNK)]
    return [(piece, ",".join("?" * len(piece))) for piece in pieces]


class KeystoreData:
    """One transaction's (or one read's) view of the keystore."""

    def __init__(self, connection: sqlite3.Connection, keys: RootKeys, state: bytes, write: bool = True) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._write = write
        """False for a snapshot: reading every bucket row makes its bound exact, which is no change to write."""
        self.keys = keys
        self._state_dirty = False
        self.held_by: object = None
        """What must live as long as this data (a snapshot's keystore, which owns its connection)."""
        self.last_seen: dict[str, datetime]
        """Per profile: when its latest retained session began (for inactive profiles)."""
        self.forgets: dict[str, PendingForget]
        """Forget requests not yet fulfilled (only between a crash and the next command)."""
        self.voices: dict[str, Voiceprint]
        """Enrolled voiceprints by profile. Removing one destroys nothing until the root is
        ratcheted (every shred and forget does that)."""
        self.last_forget: datetime | None
        """When the latest forget was requested: a session held in memory since before then is not kept."""
        self.rewind: ClockRewind | None
        """The latest rewind of the trusted clock (edge.retention.rewind), if any."""
        self.guest_until: datetime | None
        """When guest mode ends (edge.spoken), by the trusted clock; None: off. Kept here so a
        restart never ends it early: that would lengthen what guests' sessions keep."""
        self.last_seen, self.forgets, self.voices, self.last_forget, self.rewind, self.guest_until, self._bound = state_from(state)
        self._state = state_document(self.last_seen, self.forgets, self.voices, self.last_forget, self.rewind, self.guest_until)
        """The state row as read or last written, but its bound (kept in _bound)."""
        self.buckets = BucketTable(self, self._bound)
        self.sessions = SessionTable(self)

    @property
    def db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise KeystoreError("keystore data used after its transaction ended (a bug in edge)")
        return self._connection

    def close(self) -> None:
        self._connection = None

    # -- writing back ---------------------------------------------------------------

    def flush(self) -> None:
        """Write every change into the open SQL transaction (the caller commits)."""
        self.buckets.flush()
        self.sessions.flush()
        core = state_document(self.last_seen, self.forgets, self.voices, self.last_forget, self.rewind, self.guest_until)
        folded = self.buckets.folded_bound() if self._write else self._bound
        if core != self._state or folded != self._bound or self._state_dirty:  # a bound only made tighter is no change
            bound = self.buckets.bound() if self._write else self._bound
            state = state_document(self.last_seen, self.forgets, self.voices, self.last_forget, self.rewind, self.guest_until, bound)
            self.db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('state', ?)", (self.keys.seal_state(state),))
            self._state, self._bound, self._state_dirty = core, bound, False
            self.buckets.stored(bound)

    def rekey_root(self, keys: RootKeys) -> None:
        """Re-seal every bucket row and the state under a new root (the ratchet): O(live buckets)."""
        self.flush()
        self.buckets.reseal(keys)
        self.keys = keys
        self._state_dirty = True
        self.flush()

    # -- whole-bucket operations ----------------------------------------------------

    def drop_buckets(self, bucket_ids: Iterable[str]) -> None:
        """Remove buckets, and with them every session whose row they seal (nothing of it is left);
        other sessions just lose the reference. No row is opened or re-sealed."""
        bucket_ids = list(bucket_ids)
        self.flush()
        handles = [h for h in (self.buckets.handle_of(b) for b in bucket_ids) if h is not None]
        chunks = _chunked(handles)
        if not self._empty_around_survivors(set(handles)):
            for chunk, marks in chunks:  # every doomed row first: a row is never rewritten just before it goes
                self.db.execute(f"DELETE FROM sessions WHERE sealer IN ({marks})", chunk)
        for chunk, marks in chunks:
            self.db.execute(f"UPDATE sessions SET audio = NULL WHERE audio IN ({marks})", chunk)
            self.db.execute(f"UPDATE sessions SET transcript = NULL WHERE transcript IN ({marks})", chunk)
        self.sessions.forget_cache()
        for bucket_id in bucket_ids:
            self.buckets.pop(bucket_id, None)
        self.buckets.flush()

    def _empty_around_survivors(self, doomed: set[int]) -> bool:
        """When far more rows go than stay (a purge of all that is overdue), empty the table in
        one statement and put the survivors back: SQLite then frees the table's and its indexes'
        pages whole instead of taking each doomed row out of four B-trees, every page rewritten
        and logged. Done when fewer than half as many rows stay as go, and at most
        SURVIVORS_ASIDE (held in memory meanwhile). The survivors are the rows whose sealer
        lives; a row sealed by a bucket in neither set (never written by edge) makes it fall
        back. False: nothing done, the doomed rows are to be deleted one by one."""
        if not doomed:
            return False
        going = self._rows_sealed_by(sorted(doomed), 2 * SURVIVORS_ASIDE + 1)
        living = [h for (h,) in self.db.execute("SELECT handle FROM buckets") if h not in doomed]
        enough = min(SURVIVORS_ASIDE, (going - 1) // 2) + 1  # this many survivors: not worth it
        if self._rows_sealed_by(living, enough) >= enough or not self._sealers() <= doomed.union(living):
            return False
        rows: list[tuple[object, ...]] = []
        for chunk, marks in _chunked(living):
            rows.extend(self.db.execute(f"SELECT sealer, id, audio, transcript, sealed FROM sessions WHERE sealer IN ({marks})", chunk))
        self.db.execute("DELETE FROM sessions")  # no WHERE: SQLite's truncate
        self.db.executemany("INSERT INTO sessions (sealer, id, audio, transcript, sealed) VALUES (?, ?, ?, ?, ?)", sorted(rows))
        return True

    def _rows_sealed_by(self, handles: list[int], enough: int) -> int:
        """How many rows these buckets seal, counted up to `enough`: a range of the table's key
        each, whose pages (sealed rows and all) are walked, so a large count is cut short."""
        total = 0
        for chunk, marks in _chunked(handles):
            if total >= enough:
                break
            query = f"SELECT count(*) FROM (SELECT 1 FROM sessions WHERE sealer IN ({marks}) LIMIT ?)"
            total += self.db.execute(query, [*chunk, enough - total]).fetchone()[0]
        return total

    def _sealers(self) -> set[int]:
        """The distinct sealers of the session rows: one seek of the table's key each (a few
        hundred buckets), no scan."""
        found: set[int] = set()
        row = self.db.execute("SELECT min(sealer) FROM sessions").fetchone()
        while row is not None and row[0] is not None:
            found.add(row[0])
            row = self.db.execute("SELECT sealer FROM sessions WHERE sealer > ? ORDER BY sealer LIMIT 1", (row[0],)).fetchone()
        return found

    def members_of(self, bucket_ids: Iterable[str]) -> dict[str, list[str]]:
        """For each of these buckets, the sessions whose data is in it (in the table's order either way)."""
        self.flush()
        bucket_ids = list(bucket_ids)
        handles = {h: b for h, b in ((self.buckets.handle_of(b), b) for b in bucket_ids) if h is not None}
        if 2 * len(handles) >= self.db.execute("SELECT count(*) FROM buckets").fetchone()[0]:
            return self._members_in_one_pass(handles)
        found: dict[str, list[str]] = {}
        for bucket_id in bucket_ids:
            handle = self.buckets.handle_of(bucket_id)
            if handle is None:
                continue
            rows = self.db.execute(
                "SELECT id FROM sessions WHERE audio = ?1 UNION ALL SELECT id FROM sessions WHERE transcript = ?1", (handle,)
            )
            found[bucket_id] = [session_id for (session_id,) in rows]
        return found

    def _members_in_one_pass(self, handles: dict[int, str]) -> dict[str, list[str]]:
        """members_of for most buckets (a purge of all that is overdue): one pass over each of
        the two indexes (they hold the ids: the rows are not read) instead of two searches a
        bucket, each bucket's ids joined by SQLite and split here (a Python step per bucket,
        not per session). An id is hex; one holding a comma (never written by edge) would show
        in the count, and that bucket's ids are then read one by one."""
        found: dict[str, list[str]] = {bucket_id: [] for bucket_id in handles.values()}
        for column in ("audio", "transcript"):
            query = (
                f"SELECT {column}, count(*), group_concat(id, ',') FROM sessions INDEXED BY sessions_by_{column} "
                f"WHERE {column} IS NOT NULL GROUP BY {column}"
            )
            for handle, count, joined in self.db.execute(query):
                bucket_id = handles.get(handle)
                if bucket_id is not None:
                    ids = joined.split(",")
                    if len(ids) != count:
                        ids = [i for (i,) in self.db.execute(f"SELECT id FROM sessions WHERE {column} = ?", (handle,))]
                    found[bucket_id].extend(ids)
        return found

    def members_by_bucket(self) -> dict[str, list[str]]:
        """For each bucket with data, the ids of the sessions whose data is in it (one pass)."""
        index: dict[str, list[str]] = {}
        for session_id, audio, transcript in self.sessions.bucket_pairs():
            if audio is not None:
                index.setdefault(audio, []).append(session_id)
            if transcript is not None:
                index.setdefault(transcript, []).append(session_id)
        return index


class BucketTable(LazyTable[Bucket]):
    """Buckets by id. One is found by its lookup tag (a keyed hash of the id) without opening
    any other; iterating opens them all (O(live buckets): a shred, the ratchet, status). Whether
    any is due or being re-keyed is answered from the state row's bound (BucketBound) and the
    few rows made since, so a sweep with nothing to do opens none of the others."""

    def __init__(self, owner: KeystoreData, bound: BucketBound | None) -> None:
        super().__init__()
        self._owner = owner
        self._handles: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._complete = False
        self._bound = bound
        """The state row's bound with every bucket written since folded in (None: unknown)."""
        self._newer = False
        """Whether every row above the bound's handle has been opened."""

    def may_expire_by(self, instant: datetime) -> bool:
        """False only if no live bucket expires at or before `instant` (True: open them all to see)."""
        if self._bound is None or self._complete:
            return True
        if self._bound.earliest is not None and self._bound.earliest <= instant:
            return True
        self._load_newer()  # with every row read or written in this transaction, in _known
        return any(bucket.expires <= instant for bucket in self._known.values())

    def may_be_rekeying(self) -> bool:
        """False only if no live bucket has a retiring identity (True: open them all to see)."""
        if self._bound is None or self._complete or self._bound.rekeying:
            return True
        self._load_newer()
        return any(bucket.retiring_identity is not None for bucket in self._known.values())

    def earliest_expiry(self) -> datetime | None:
        """No live bucket expires before this (None: there is none): the bound, with the rows
        above it opened; exact once every row was opened, or when the bound is unknown (then all are)."""
        if self._bound is None or self._complete:
            return min((bucket.expires for bucket in self.values()), default=None)
        self._load_newer()
        expiries = [bucket.expires for bucket in self._known.values()]
        if self._bound.earliest is not None:
            expiries.append(self._bound.earliest)
        return min(expiries, default=None)

    def folded_bound(self) -> BucketBound | None:
        """The stored bound with the bucket rows written since folded in: a change that must be stored."""
        return self._bound

    def stored(self, bound: BucketBound | None) -> None:
        """The bound the state row now holds."""
        self._bound = bound

    def bound(self) -> BucketBound | None:
        """The bound to store with what was flushed: exact once every row was opened; else the
        stored one, widened to the rows above it when those were opened."""
        if self._complete:
            live = [(self._handles[bucket_id], bucket) for bucket_id, bucket in self._known.items()]
            return BucketBound(
                min((bucket.expires for _, bucket in live), default=None),
                max((handle for handle, _ in live), default=self._bound.upto if self._bound is not None else 0),
                any(bucket.retiring_identity is not None for _, bucket in live),
            )
        if self._bound is None or not self._newer:
            return self._bound
        bound = self._bound
        for bucket_id, bucket in self._known.items():
            handle = self._handles[bucket_id]
            if handle > self._bound.upto:
                earliest = bucket.expires if bound.earliest is None else min(bound.earliest, bucket.expires)
                bound = BucketBound(earliest, max(bound.upto, handle), bound.rekeying or bucket.retiring_identity is not None)
        return bound

    def _load_newer(self) -> None:
        """Open the rows above the bound's handle: made since the bound was written (by any edge)."""
        if self._newer or self._bound is None:
            return
        for handle, sealed in self._owner.db.execute("SELECT handle, sealed FROM buckets WHERE handle > ?", (self._bound.upto,)):
            if handle not in self._ids:
                self._remember(handle, sealed)
        self._newer = True

    def _remember(self, handle: int, sealed: bytes) -> Bucket:
        try:
            bucket = self._owner.keys.open_bucket(handle, sealed)
        except (InvalidTag, KeyError, TypeError, ValueError):
            raise KeystoreError(f"bucket row {handle}: it does not open with the root key (keystore damaged)") from None
        if bucket.id not in self._known and bucket.id not in self._gone:
            self._known[bucket.id] = bucket
        self._handles[bucket.id], self._ids[handle] = handle, bucket.id
        return bucket

    def _load_all(self) -> None:
        if not self._complete:
            for handle, sealed in self._owner.db.execute("SELECT handle, sealed FROM buckets"):
                if handle not in self._ids:
                    self._remember(handle, sealed)
            self._complete = True

    def _load(self, key: str) -> Bucket | None:
        if self._complete:  # every row is known already
            return None
        row = self._owner.db.execute("SELECT handle, sealed FROM buckets WHERE lookup = ?", (self._owner.keys.lookup(key),)).fetchone()
        if row is None:
            return None
        bucket = self._remember(*row)
        if bucket.id != key:
            raise KeystoreError(f"bucket row {row[0]}: its lookup tag names another bucket (keystore damaged)")
        return bucket

    def _seal(self, key: str, value: Bucket) -> None:
        db, keys = self._owner.db, self._owner.keys
        handle = self._handles.get(key)
        if handle is None:  # the row's handle is bound into its seal, so it is made first
            cursor = db.execute("INSERT INTO buckets (lookup, sealed) VALUES (?, x'')", (keys.lookup(key),))
            handle = cursor.lastrowid
            assert handle is not None
            self._handles[key], self._ids[handle] = handle, key
        db.execute("UPDATE buckets SET sealed = ? WHERE handle = ?", (keys.seal_bucket(handle, value), handle))
        if self._bound is not None:
            self._bound = self._bound.folded(handle, value)

    def _delete(self, key: str) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            self._owner.db.execute("DELETE FROM buckets WHERE handle = ?", (handle,))
            del self._ids[handle]

    def __iter__(self) -> Iterator[str]:
        self._load_all()
        return iter(list(self._known))

    def __len__(self) -> int:
        self._load_all()
        return len(self._known)

    def rename(self, bucket_id: str, bucket: Bucket) -> None:
        """Give a bucket another id (a clock rewind moved its expiry, which its id names),
        keeping its row: the session rows it seals are bound to the row's handle. The new
        lookup tag is written at once, so renaming several buckets of one profile and kind to
        earlier instants must go earliest first (lookup tags are unique)."""
        handle = self.handle_of(bucket_id)
        if handle is None:
            raise KeyError(bucket_id)  # a bucket not yet in the database has nothing to rename
        if bucket.id in self._known:
            raise KeystoreError(f"bucket {bucket_id}: cannot be renamed {bucket.id}, which another bucket has (a bug in edge)")
        del self._known[bucket_id], self._handles[bucket_id]
        self._dirty.discard(bucket_id)
        self._owner.db.execute("UPDATE buckets SET lookup = ? WHERE handle = ?", (self._owner.keys.lookup(bucket.id), handle))
        self._known[bucket.id], self._handles[bucket.id], self._ids[handle] = bucket, handle, bucket.id
        self._dirty.add(bucket.id)

    def by_handle(self, handle: int) -> Bucket | None:
        bucket_id = self._ids.get(handle)
        if bucket_id is None:
            row = self._owner.db.execute("SELECT handle, sealed FROM buckets WHERE handle = ?", (handle,)).fetchone()
            if row is None:
                return None
            bucket_id = self._remember(*row).id
        return self._known.get(bucket_id)

    def handle_of(self, bucket_id: str) -> int | None:
        """The bucket's row handle once it is in the database (after a flush), else None."""
        if bucket_id in self._gone or self.get(bucket_id) is None:
            return None
        return self._handles.get(bucket_id)

    def id_of(self, handle: int | None) -> str | None:
        if handle is None:
            return None
        if handle not in self._ids:
            self._load_all()
        return self._ids.get(handle)

    def reseal(self, keys: RootKeys) -> None:
        self._load_all()
        self.flush()
        for bucket_id, bucket in self._known.items():
            handle = self._handles[bucket_id]
            self._owner.db.execute(
                "UPDATE buckets SET lookup = ?, sealed = ? WHERE handle = ?",
                (keys.lookup(bucket_id), keys.seal_bucket(handle, bucket), handle),
            )


class SessionTable(LazyTable[SessionEntry]):
    """Sessions by id; each row is opened when first asked for."""

    def __init__(self, owner: KeystoreData) -> None:
        super().__init__()
        self._owner = owner
        self._keys: dict[bytes, ChaCha20Poly1305] = {}
        """Row keys by identity secret (a handful of buckets seal thousands of rows)."""

    def forget_cache(self) -> None:
        """After SQL changed rows directly (a shred): read them again when asked."""
        self.flush()
        self._known.clear()

    def _open(self, session_id: str, sealer: int, audio: int | None, transcript: int | None, sealed: bytes) -> SessionEntry:
        bucket = self._owner.buckets.by_handle(sealer)
        if bucket is None:
            raise KeystoreError(f"session {session_id}: the bucket that seals it is missing (keystore damaged)", session=session_id)
        for secret in (bucket.secret, bucket.retiring_identity):  # the retiring one only mid-re-key
            if secret is None:
                continue
            try:
                plaintext = unseal(self._key(secret), sealed, session_context(session_id, sealer))
            except InvalidTag:
                continue
            try:
                return session_from(session_id, plaintext, audio is not None, transcript is not None)
            except (KeyError, TypeError, ValueError):
                break
        raise KeystoreError(f"session {session_id}: its row does not open (keystore damaged)", session=session_id)

    def _key(self, secret: bytes) -> ChaCha20Poly1305:
        key = self._keys.get(secret)
        if key is None:
            key = self._keys[secret] = session_key(secret)
        return key

    def _load(self, key: str) -> SessionEntry | None:
        row = self._owner.db.execute("SELECT sealer, audio, transcript, sealed FROM sessions WHERE id = ?", (key,)).fetchone()
        return None if row is None else self._open(key, *row)

    def _stored(self, key: str) -> bool:
        return self._owner.db.execute("SELECT 1 FROM sessions WHERE id = ?", (key,)).fetchone() is not None

    def _seal(self, key: str, value: SessionEntry) -> None:
        db, buckets = self._owner.db, self._owner.buckets
        audio = buckets.handle_of(value.audio_bucket) if value.audio_bucket else None
        transcript = buckets.handle_of(value.transcript_bucket) if value.transcript_bucket else None
        sealer_id = _sealer(value, audio, transcript)
        if sealer_id is None:  # nothing of it is kept
            self._delete(key)
            return
        sealer = buckets.handle_of(sealer_id)
        bucket = buckets[sealer_id]
        assert sealer is not None
        sealed = seal(self._key(bucket.secret), session_document(value), session_context(key, sealer))
        db.execute(
            "INSERT OR REPLACE INTO sessions (id, sealer, audio, transcript, sealed) VALUES (?, ?, ?, ?, ?)",
            (key, sealer, audio, transcript, sealed),
        )

    def _delete(self, key: str) -> None:
        self._owner.db.execute("DELETE FROM sessions WHERE id = ?", (key,))

    def flush(self) -> None:
        self._owner.buckets.flush()  # a new session's buckets need their handles
        super().flush()

    def __iter__(self) -> Iterator[str]:
        self._owner.flush()
        return iter([session_id for (session_id,) in self._owner.db.execute("SELECT id FROM sessions")])

    def __len__(self) -> int:
        self._owner.flush()
        count: int = self._owner.db.execute("SELECT count(*) FROM sessions").fetchone()[0]
        return count

    def entries(self) -> Iterator[SessionEntry]:
        """Every session, opened one by one (not kept in memory: 100,000 may be retained)."""
        self._owner.flush()
        for session_id, *row in self._owner.db.execute("SELECT id, sealer, audio, transcript, sealed FROM sessions"):  # a cursor: streamed
            yield self._known.get(session_id) or self._open(session_id, *row)

    def bucket_pairs(self) -> list[tuple[str, str | None, str | None]]:
        """(id, audio bucket, transcript bucket) of every session, without opening any."""
        self._owner.flush()
        id_of = self._owner.buckets.id_of
        rows = self._owner.db.execute("SELECT id, audio, transcript FROM sessions").fetchall()
        return [(session_id, id_of(audio), id_of(transcript)) for session_id, audio, transcript in rows]

    def kept(self, column: str) -> set[str]:
        """Ids of the sessions whose audio (column "audio") or transcript is still kept."""
        if column not in ("audio", "transcript"):
            raise ValueError(column)
        self._owner.flush()
        return {session_id for (session_id,) in self._owner.db.execute(f"SELECT id FROM sessions WHERE {column} IS NOT NULL")}

    def count_kept(self, column: str) -> int:
        """How many sessions still keep their audio (column "audio") or transcript: read from
        that column's partial index alone."""
        if column not in ("audio", "transcript"):
            raise ValueError(column)
        self._owner.flush()
        query = f"SELECT count(*) FROM sessions INDEXED BY sessions_by_{column} WHERE {column} IS NOT NULL"
        (count,) = self._owner.db.execute(query).fetchone()
        return int(count)

    def reseal_members(self, bucket_id: str) -> None:
        """Open every session this bucket seals, so the next flush seals it again under the
        bucket's identity as it is then (a re-key)."""
        self._owner.flush()
        handle = self._owner.buckets.handle_of(bucket_id)
        if handle is None:
            return
        rows = self._owner.db.execute("SELECT id FROM sessions WHERE sealer = ?", (handle,)).fetchall()
        for (session_id,) in rows:
            self[session_id] = self[session_id]


def _sealer(entry: SessionEntry, audio: int | None, transcript: int | None) -> str | None:
    """The bucket whose identity seals the session's row: the one that dies last (a shred of
    the other leaves the row readable), the transcript's on a tie."""
    if audio is None:
        return entry.transcript_bucket if transcript is not None else None
    if transcript is None:
        return entry.audio_bucket
    assert entry.audio_expires is not None and entry.transcript_expires is not None
    return entry.audio_bucket if entry.audio_expires > entry.transcript_expires else entry.transcript_bucket
