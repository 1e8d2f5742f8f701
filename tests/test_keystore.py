"""Keystore v2: rows sealed so that a shred leaves nothing readable in any copy of the
database (pages, WAL, free pages), commits that touch only what changed, and the one-step
migration from v1 (tests/vectors/keystore-v1, written by keystore v1 itself)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from edge.config import load_config
from edge.crypto.age import read_header, unwrap_file_key
from edge.crypto.vault import FileVault
from edge.disk.layout import KEYSTORE, KEYSTORE_DB, recording_path, transcript_path
from edge.errors import KeystoreError
from edge.store.legacy import open_v1
from edge.store.records import Bucket, BucketBound, PendingForget, SessionEntry
from edge.store.rows import (
    RootKeys,
    bucket_document,
    session_context,
    session_document,
    session_from,
    session_key,
    state_document,
    state_from,
    unseal,
)
from edge.values import DataKind, TagRule

from support import (
    ROOT,
    START,
    FakeWall,
    Retention,
    audit_types,
    edge_agent,
    file_vault,
    openable,
    populate,
    record_in_process,
    retention_parts,
    status,
    traced_sql,
)

VECTOR = ROOT / "tests" / "vectors" / "keystore-v1"
LONG = Retention("adult", "3650d", "3650d")
LONG_CHILD = Retention("child", "3650d", "3650d")
LONG_HOUSEHOLD = 'max_child_audio = "3650d"\nmax_child_transcript = "3650d"'


# -- rows ----------------------------------------------------------------------------------------


def test_rows_round_trip_every_field_shape():
    when = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    for bucket in (
        Bucket("b1", "child", DataKind.AUDIO, when + timedelta(hours=1), "age1x", b"\x01" * 32, retiring_identity=b"\x02" * 32),
        Bucket("b2", "parent", DataKind.TRANSCRIPT, when + timedelta(days=30), "age1y", b"\x03" * 32),
    ):
        keys = RootKeys(b"\x09" * 32)
        assert keys.open_bucket(7, keys.seal_bucket(7, bucket)) == bucket
        with pytest.raises(InvalidTag):  # a row moved to another handle does not open
            keys.open_bucket(8, keys.seal_bucket(7, bucket))
    for entry in (
        SessionEntry("a", "child", TagRule.GIVEN, True, when, when + timedelta(hours=1), None, "b1", None, "complete", 2.5),
        SessionEntry("b", "parent", TagRule.ACTIVE, False, when, None, when + timedelta(days=30), None, "b2"),
    ):
        assert session_from(entry.id, session_document(entry), entry.audio_bucket is not None, entry.transcript_bucket is not None) == entry
    both = SessionEntry("c", "child", TagRule.GIVEN, True, when, when, when + timedelta(days=7), "b1", "b2")
    assert session_from("c", session_document(both), False, True) == replace(
        both, audio_bucket=None, audio_expires=None, audio_shredded=when
    )
    pending = PendingForget("r1", "session c", ("c",), {"b1": ("c",)}, ("b2",))
    assert state_from(state_document({"child": when}, {"r1": pending})) == ({"child": when}, {"r1": pending}, {}, None, None, None, None)
    bound = BucketBound(when, 7, True)
    assert state_from(state_document({}, {}, bound=bound))[6] == bound
    for odd in ({"earliest": "2026-11-28T12:00:00", "upto": 7, "rekeying": False}, {"earliest": "soon", "upto": 7}, ["x"]):
        document = json.loads(state_document({}, {}, bound=bound))
        document["buckets"] = odd  # a bound the due check cannot compare (no zone): none, and every row is opened
        assert state_from(json.dumps(document).encode())[6] is None


def test_a_commit_opens_only_the_rows_it_touches(tmp_path, write_config, monkeypatch):
    import edge.store.tables as tables

    config = load_config(write_config(mode="always"))
    clock, store, _ = retention_parts(config, FakeWall())
    populate(store, 2_000, span=timedelta(hours=48), end=START)
    opened = []
    real = session_from

    def counted(*args):
        opened.append(args[0])
        return real(*args)

    monkeypatch.setattr(tables, "session_from", counted)
    session = record_in_process(store, clock, config, "child")
    assert opened == [session]  # the finish reads the row the begin wrote; nothing else is opened
    with pytest.raises(LookupError), store.transaction() as data:  # a damaged row is named when touched, and only then
        data.db.execute("UPDATE sessions SET sealed = zeroblob(60) WHERE id = ?", ("0000000000000001",))
        with pytest.raises(KeystoreError, match="session 0000000000000001: its row does not open"):
            data.sessions["0000000000000001"]
        assert data.sessions["0000000000000002"].profile == "parent"
        raise LookupError("rolled back: nothing of this is committed")
    assert store.read().sessions["0000000000000001"].profile == "child"


# -- the remnant test, on the database's own bytes -----------------------------------------------


def _windows(blob: bytes, length: int) -> set[bytes]:
    return {blob[i : i + length] for i in range(len(blob) - length + 1)}


def _database_bytes(folder: Path) -> bytes:
    """Every byte SQLite keeps: the database with its free pages, the WAL with every old
    frame, the shared memory."""
    return b"".join((folder / name).read_bytes() for name in sorted(os.listdir(folder)) if name.startswith(KEYSTORE_DB))


class Rows:
    """What a session's sealer bucket row and its session row look like sealed, so every
    window of the database's bytes can be tried as either (an attacker who knows the format)."""

    def __init__(self, store, session_id: str) -> None:
        data = store.read()
        self.entry = data.sessions[session_id]
        self.sealer = data.db.execute("SELECT sealer FROM sessions WHERE id = ?", (session_id,)).fetchone()[0]
        self.bucket = data.buckets.by_handle(self.sealer)
        lengths = {
            len(json.dumps(bucket_document(b), separators=(",", ":")).encode()) + 28
            for b in (self.bucket, replace(self.bucket, retiring_identity=bytes(32)))
        }
        self.bucket_lengths = sorted(lengths)  # without and with a retiring identity
        self.session_length = len(session_document(self.entry)) + 28

    def secrets_in_bucket_rows(self, blob: bytes, roots: list[bytes]) -> set[bytes]:
        """Every identity any copy of the sealer's row yields with these roots."""
        found = set()
        for root in roots:
            keys = RootKeys(root)
            for length in self.bucket_lengths:
                for window in _windows(blob, length):
                    try:
                        bucket = keys.open_bucket(self.sealer, window)
                    except (InvalidTag, ValueError):
                        continue
                    found |= {s for s in (bucket.secret, bucket.retiring_identity) if s is not None}
        return found

    def session_opens(self, blob: bytes, secrets: list[bytes]) -> bool:
        context = session_context(self.entry.id, self.sealer)
        for secret in secrets:
            key = session_key(secret)
            for window in _windows(blob, self.session_length):
                try:
                    unseal(key, window, context)
                    return True
                except InvalidTag:
                    continue
        return False


def _held_now(store) -> tuple[list[bytes], list[bytes]]:
    """(roots in the vault, bucket identities in the keystore): all a thief of the device gets."""
    roots = [r for r in (store.vault.read("current"), store.vault.read("next")) if r is not None]
    data = store.read()
    secrets = [s for b in data.buckets.values() for s in (b.secret, b.retiring_identity) if s is not None]
    return roots, secrets


@pytest.mark.parametrize("how", ["shred", "forget"])
def test_no_copy_of_the_database_opens_a_shredded_session(tmp_path, write_config, how):
    """Copies of the database's bytes from before and after (pages, free pages, every WAL
    frame) beside the vault and keystore as they are now: the shredded session's row and
    the identity that sealed it open with nothing the device holds."""
    config = load_config(write_config(mode="always"))
    wall = FakeWall()
    clock, store, shredder = retention_parts(config, wall)
    doomed = record_in_process(store, clock, config, "child")
    wall.advance(60)
    sibling = record_in_process(store, clock, config, "child")  # the same buckets as the doomed session
    wall.advance(2 * 3600)
    later = record_in_process(store, clock, config, "child")  # buckets of its own
    data_dir = config.device.data_dir
    rows = Rows(store, doomed)
    before = _database_bytes(data_dir)
    roots, secrets = _held_now(store)
    assert rows.bucket.secret in rows.secrets_in_bucket_rows(before, roots) and rows.session_opens(before, secrets)  # the search works
    profile_and_times = [b"child", rows.entry.created.isoformat().encode()[:16], rows.bucket.id.encode()]
    assert not [s for s in profile_and_times if s in before]  # sealed, never in the clear

    if how == "shred":  # past the transcript expiry of the first two only (a transcript is kept 7 days)
        wall.advance(7 * 86400 - 2 * 3600 + 30 * 60)
        shredder.sweep()
        gone, kept = {doomed, sibling}, {later}
    else:
        from edge.retention.shredder import ForgetRequest

        assert shredder.forget(ForgetRequest(session=doomed)).forgotten == [doomed]
        gone, kept = {doomed}, {sibling, later}
    ids = set(store.read().sessions)
    assert ids & gone == set() and kept <= ids
    after = before + _database_bytes(data_dir)  # old pages and frames, and everything now
    roots, secrets = _held_now(store)
    assert rows.bucket.secret not in rows.secrets_in_bucket_rows(after, roots)
    assert not rows.session_opens(after, secrets)


def test_a_session_commit_writes_only_its_rows(tmp_path, write_config):
    """What one session writes to the keystore (WAL bytes, after a checkpoint emptied it)
    does not grow with the number of sessions retained."""
    config = load_config(write_config(mode="always", parent=LONG, child=LONG_CHILD, household=LONG_HOUSEHOLD))
    wall = FakeWall()
    clock, store, _ = retention_parts(config, wall)
    wal = config.device.data_dir / f"{KEYSTORE_DB}-wal"

    def one_session() -> int:
        store.checkpoint()
        assert wal.stat().st_size == 0
        record_in_process(store, clock, config, "child")
        return wal.stat().st_size

    record_in_process(store, clock, config, "child")  # the database exists
    first = one_session()
    populate(store, 5_000, span=timedelta(hours=48), end=START)
    later = one_session()
    assert 0 < first and later <= max(2 * first, 64 * 1024), (first, later)


@pytest.mark.parametrize("overdue", [2_000, 2])
def test_a_purge_of_most_sessions_empties_the_table_around_the_survivors(tmp_path, write_config, monkeypatch, overdue):
    """When far more rows go than stay, the table is emptied in one statement (SQLite frees
    its pages whole) and the survivors are put back as they were: one whose audio went keeps
    its transcript, one whose data all lives keeps both. When few go, they go row by row."""
    config = load_config(write_config(mode="always"))
    wall = FakeWall()
    statements = traced_sql(monkeypatch)
    clock, store, shredder = retention_parts(config, wall)
    half = record_in_process(store, clock, config, "child")
    wall.advance(2 * 3600)  # its audio (kept 1 h) is due, its transcript (7 days) is not
    whole = record_in_process(store, clock, config, "child")
    populate(store, overdue, span=timedelta(hours=48), end=START)
    before = {s: store.read().sessions[s] for s in (half, whole)}
    statements.clear()
    report = shredder.sweep()
    populated = [f"{i:016x}" for i in range(overdue)]  # edge.testing.populate's ids
    assert sorted(s for b in report.buckets for s in b.sessions) == sorted([*populated, *populated, half])
    deletes = [s for s in statements if s.startswith("DELETE FROM sessions")]
    if overdue > 2:
        assert deletes == ["DELETE FROM sessions"]
    else:
        assert deletes and all(" WHERE sealer IN " in s for s in deletes)
    after = store.read().sessions
    assert set(after) == {half, whole}
    audio = {"audio_bucket", "audio_expires", "audio_shredded"}
    assert after[half].audio_bucket is None and after[half].transcript_bucket is not None
    assert replace(after[half], **{f: getattr(before[half], f) for f in audio}) == before[half] and after[whole] == before[whole]
    data_dir = config.device.data_dir
    files = [
        recording_path(data_dir, half),
        transcript_path(data_dir, half),
        recording_path(data_dir, whole),
        transcript_path(data_dir, whole),
    ]
    assert openable(store, files) == [False, True, True, True]


def test_a_row_sealed_by_no_bucket_is_never_swept_away_with_the_table(tmp_path, write_config, monkeypatch):
    """Emptying the table around the survivors puts back the rows of living buckets only, so
    a row whose sealer is in no bucket row (edge never writes one) makes the purge delete row
    by row instead: the row stays, as it always did."""
    import sqlite3

    config = load_config(write_config(mode="always"))
    statements = traced_sql(monkeypatch)
    clock, store, shredder = retention_parts(config, FakeWall())
    populate(store, 2_000, span=timedelta(hours=48), end=START)
    store.close()
    database = sqlite3.connect(config.device.data_dir / KEYSTORE_DB)
    with database:
        database.execute(
            "INSERT INTO sessions (sealer, id, audio, transcript, sealed) VALUES (999999, 'feedfacefeedface', NULL, NULL, x'00')"
        )
    database.close()
    statements.clear()
    shredder.sweep()
    assert any(" WHERE sealer IN " in s for s in statements if s.startswith("DELETE FROM sessions"))
    database = sqlite3.connect(config.device.data_dir / KEYSTORE_DB)
    assert database.execute("SELECT sealer, id FROM sessions").fetchall() == [(999999, "feedfacefeedface")]
    database.close()


def test_an_id_holding_a_comma_is_listed_whole_when_most_buckets_are_listed_at_once(tmp_path, write_config, monkeypatch):
    """The members of most buckets are joined by SQLite and split on commas; an id holding a
    comma (edge writes hex, but the file is the parent's) is read row by row instead, so a
    purge never misses a session or shreds one that is not there."""
    import sqlite3

    config = load_config(write_config(mode="always"))
    _clock, store, _shredder = retention_parts(config, FakeWall())
    populate(store, 200, span=timedelta(hours=48), end=START)
    store.close()
    database = sqlite3.connect(config.device.data_dir / KEYSTORE_DB)
    with database:
        database.execute("UPDATE sessions SET id = 'feed,face' WHERE id = (SELECT min(id) FROM sessions)")
    database.close()
    statements = traced_sql(monkeypatch)
    data = store.read()
    one_by_one = {bucket: sorted(ids) for bucket, ids in data.members_by_bucket().items()}
    statements.clear()
    at_once = {bucket: sorted(ids) for bucket, ids in data.members_of(list(one_by_one)).items()}
    assert at_once == one_by_one and sum("feed,face" in ids for ids in at_once.values()) == 2
    assert sum("group_concat" in s for s in statements) == 2  # one pass per index, and for the two
    assert len([s for s in statements if s.startswith("SELECT id FROM sessions WHERE")]) == 2  # buckets of that id, row by row


# -- migration from v1 ----------------------------------------------------------------------------


@pytest.fixture
def v1_folder(tmp_path, write_config):
    """The v1 vector in a folder of its own: a config, its data folder and its file vault."""
    data = tmp_path / "data"
    shutil.copytree(VECTOR / "data", data)
    for path in [data, *data.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    for name in ("root.key", "root.key.next"):
        shutil.copy(VECTOR / name, tmp_path / name)
        (tmp_path / name).chmod(0o600)
    config = write_config(mode="always", vault=file_vault(tmp_path / "root.key"), parent=LONG, child=LONG_CHILD, household=LONG_HOUSEHOLD)
    return config, data


def _v1_records(tmp_path: Path):
    sealed = (VECTOR / "data" / KEYSTORE).read_bytes()
    for name in ("root.key", "root.key.next"):
        try:
            return open_v1((tmp_path / name).read_bytes(), sealed)
        except InvalidTag:
            continue
    raise AssertionError("the vector's keystore opens with neither root")


def test_the_v1_vector_holds_sessions_in_every_state(tmp_path, v1_folder):
    legacy = _v1_records(tmp_path)
    states = {s.state for s in legacy.sessions}
    assert states == {"recording", "complete"}
    assert any(s.audio_bucket is None and s.transcript_bucket for s in legacy.sessions)  # audio shredded
    assert any(b.retiring_identity for b in legacy.buckets)  # mid re-key
    assert legacy.forgets  # a forget a crash interrupted
    assert (tmp_path / "root.key.next").exists()  # and the ratchet it was in


def test_read_only_commands_read_v1_and_write_nothing(tmp_path, v1_folder):
    config, data = v1_folder
    before = sorted(os.listdir(data)), (data / KEYSTORE).read_bytes()
    shown = status(config)
    assert shown.returncode == 0, shown.stderr
    legacy = _v1_records(tmp_path)
    assert sorted(s["session"] for s in json.loads(shown.stdout)["sessions"]) == sorted(s.id for s in legacy.sessions)
    assert (sorted(os.listdir(data)), (data / KEYSTORE).read_bytes()) == before
    assert (tmp_path / "root.key.next").exists()


def test_a_crash_during_migration_leaves_v1_and_the_next_start_migrates(tmp_path, v1_folder):
    config, data = v1_folder
    legacy = _v1_records(tmp_path)
    v1 = (data / KEYSTORE).read_bytes()
    crashed = edge_agent("--config", str(config), "purge", env={"EDGE_CRASH_AT": "migrate.filled:1"})
    assert crashed.returncode == -9, crashed.stderr
    assert (data / KEYSTORE).read_bytes() == v1  # v1 intact
    assert not (data / KEYSTORE_DB).exists()  # the conversion was never published...
    assert [n for n in os.listdir(data) if n.startswith(f".{KEYSTORE_DB}.")]  # ...only its temporary file

    purged = edge_agent("--config", str(config), "purge")
    assert purged.returncode == 0, purged.stderr
    assert not (data / KEYSTORE).exists() and not (tmp_path / "root.key.next").exists()
    migrated = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines() if '"keystore.migrated"' in line]
    assert [m["fields"] for m in migrated][-1] == {"version": 2, "sessions": len(legacy.sessions), "buckets": len(legacy.buckets)}
    assert "forget.fulfilled" in audit_types(data)[-5:]  # the interrupted forget, finished after the migration

    store = _store(config)
    now = store.read()
    forgotten = {s for f in legacy.forgets.values() for s in f.sessions}
    assert {s.id for s in now.sessions.entries()} == {s.id for s in legacy.sessions} - forgotten
    identities = [i for b in now.buckets.values() for i in store.identities(b)]
    for old in legacy.sessions:  # every field the same, every kept file still opens
        assert now.sessions[old.id] == old
        if old.state == "recording":  # cut short by the kill: only its header (the file key) can open
            with recording_path(data, old.id).open("rb") as sealed:
                assert unwrap_file_key(read_header(sealed), identities)
            continue
        kept = [
            p for p, b in ((recording_path(data, old.id), old.audio_bucket), (transcript_path(data, old.id), old.transcript_bucket)) if b
        ]
        assert openable(store, kept) == [True] * len(kept)
    assert all(b.retiring_identity is None for b in now.buckets.values())  # the re-key finished
    for session in forgotten:
        assert not recording_path(data, session).exists() and not transcript_path(data, session).exists()
    verified = edge_agent("--config", str(config), "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _store(config_path: Path):
    from edge import wiring

    config = load_config(config_path)
    assert config.vault.path is not None
    return wiring.open_store(config, vault=FileVault(config.vault.path))[0]


def test_the_audit_log_of_a_migration_has_counts_only(tmp_path, v1_folder):
    config, data = v1_folder
    assert edge_agent("--config", str(config), "purge").returncode == 0
    entries = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
    migrated = [e for e in entries if e["type"] == "keystore.migrated"]
    assert len(migrated) == 1 and set(migrated[0]["fields"]) == {"version", "sessions", "buckets"}


def test_a_shred_that_empties_a_profile_leaves_no_readable_last_heard(tmp_path, write_config):
    """The state row said when the profile was last heard: it goes in the ratchet's own commit."""
    config = load_config(write_config(mode="always"))
    wall = FakeWall()
    clock, store, shredder = retention_parts(config, wall)
    session = record_in_process(store, clock, config, "child")
    heard = store.read().last_seen
    assert list(heard) == ["child"]
    wall.advance(8 * 86400)
    shredder.sweep()
    assert store.read().last_seen == {}
    length = len(state_document(heard, {})) + 28
    roots, _ = _held_now(store)
    for root in roots:
        for window in _windows(_database_bytes(config.device.data_dir), length):
            with pytest.raises(InvalidTag):
                RootKeys(root).open_state(window)
    assert session not in store.read().sessions


def test_a_forget_resumed_after_a_crash_spares_a_session_that_joined_its_bucket(tmp_path, write_config, monkeypatch):
    import edge.store.keystore as keystore_module
    from edge.retention.shredder import ForgetRequest

    config = load_config(write_config(mode="always"))
    wall = FakeWall()
    clock, store, shredder = retention_parts(config, wall)
    doomed = record_in_process(store, clock, config, "child")

    def power_cut(name: str) -> None:
        if name == "ratchet.staged":
            raise KeyboardInterrupt  # the forget stops after its write-ahead commit

    monkeypatch.setattr(keystore_module, "crash_point", power_cut)
    with pytest.raises(KeyboardInterrupt):
        shredder.forget(ForgetRequest(session=doomed))
    monkeypatch.undo()
    assert store.read().forgets  # pending: its buckets are still there...
    wall.advance(30)
    joined = record_in_process(store, clock, config, "child")  # ...and a new session joins them
    shredder.sweep()  # finishes the forget
    data = store.read()
    assert not data.forgets and doomed not in data.sessions and joined in data.sessions
    files = [recording_path(config.device.data_dir, joined), transcript_path(config.device.data_dir, joined)]
    assert openable(store, files) == [True, True]
