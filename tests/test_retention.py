"""Retention and crypto-shredding: policy, trusted clock, sweep, forget, remnant tests,
crash recovery, the real scheduler, and whole-process time travel with faketime."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge import wiring
from edge.audit.log import AuditLog
from edge.audit.verify import verify
from edge.config import load_config
from edge.crypto.age import decrypt, rekey_in_place
from edge.disk.layout import recording_path, transcript_path
from edge.disk.lock import DataLock
from edge.errors import KeystoreError
from edge.instants import iso_utc
from edge.policy import Tag, strictest_policy
from edge.retention.clock import TrustedClock
from edge.retention.shredder import ForgetRequest, Shredder
from edge.store.buckets import expiry_for, window_for
from edge.store.details import open_sealed
from edge.store.keystore import Keystore
from edge.systemd import Notifier
from edge.transcript import Transcript, Word
from edge.values import TagRule

from support import (
    CHILD,
    PARENT,
    PCM,
    ROOT,
    START,
    FakeWall,
    MicAgent,
    NotifySocket,
    Retention,
    edge_agent,
    faketime,
    forget_in_a_terminal,
    openable,
    record_in_process,
    retention_parts,
    wait_for,
)


def setup(tmp_path: Path, write_config, **template):
    """A config, a wall clock moved by hand, and the retention parts the composition root makes."""
    config = load_config(write_config(mode="always", **template))
    wall = FakeWall()
    clock, store, shredder = retention_parts(config, wall)
    return config, wall, clock, store, shredder


def record(store, clock, config, profile: str) -> str:
    return record_in_process(store, clock, config, profile)


# -- policy -------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [timedelta(seconds=5), timedelta(minutes=90), timedelta(hours=24), timedelta(days=7)])
def test_bucket_expiry_is_never_later_than_policy(keep):
    rng = random.Random(7)
    for _ in range(500):
        created = START + timedelta(seconds=rng.uniform(0, 10 * 86400))
        expires = expiry_for(created, keep)
        assert created + keep - window_for(keep) < expires <= created + keep
        assert window_for(keep) * 12 <= keep or window_for(keep) == timedelta(seconds=1)


# -- trusted clock ------------------------------------------------------------------


def test_clock_set_back_never_moves_time_back(tmp_path):
    wall = FakeWall()
    clock = TrustedClock(tmp_path, wall=lambda: wall.wall, monotonic=lambda: wall.mono, boot=lambda: "b", uptime=lambda: wall.mono)
    clock.persist()
    wall.advance(60)
    wall.set_wall(START - timedelta(days=365))  # someone sets the clock back a year
    reading = clock.read()
    assert reading.now == START + timedelta(seconds=60)
    assert reading.set_back > timedelta(days=364)
    # A new process in the same boot reads the persisted mark.
    again = TrustedClock(tmp_path, wall=lambda: wall.wall, monotonic=lambda: wall.mono, boot=lambda: "b", uptime=lambda: wall.mono)
    assert again.now() == START + timedelta(seconds=60)
    # After a reboot the monotonic clock restarts: the mark itself is the floor.
    rebooted = TrustedClock(tmp_path, wall=lambda: wall.wall, monotonic=lambda: 5.0, boot=lambda: "other", uptime=lambda: 5.0)
    assert rebooted.now() == START


def test_clock_forward_jump_is_taken(tmp_path):
    wall = FakeWall()
    clock = TrustedClock(tmp_path, wall=lambda: wall.wall, monotonic=lambda: wall.mono, boot=lambda: "b", uptime=lambda: wall.mono)
    clock.persist()
    wall.set_wall(datetime(2038, 1, 20, tzinfo=timezone.utc))
    assert clock.now() == datetime(2038, 1, 20, tzinfo=timezone.utc)


# -- sweep ---------------------------------------------------------------------------


def test_sweep_shreds_each_kind_at_its_expiry(tmp_path, write_config):
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    session = record(store, clock, config, "child")  # audio 1h, transcript 7d
    data_dir = config.device.data_dir
    assert shredder.sweep().empty
    wall.advance(3600)
    report = shredder.sweep()
    assert [(b.kind, b.reason, b.sessions) for b in report.buckets] == [("audio", "expired", (session,))]
    assert timedelta(0) <= report.buckets[0].late < timedelta(minutes=5)  # the window rounds down
    assert not recording_path(data_dir, session).exists() and transcript_path(data_dir, session).exists()
    entry = store.read().sessions[session]
    assert entry.audio_expires is None and entry.transcript_expires is not None
    assert shredder.sweep().empty  # idempotent
    wall.advance(7 * 86400)
    assert [b.kind for b in shredder.sweep().buckets] == ["transcript"]
    assert store.read().sessions == {} and list(data_dir.rglob("*.age")) == []


def test_cost_is_per_bucket_not_per_session(tmp_path, write_config):
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    sessions = [record(store, clock, config, "child") for _ in range(20)]
    assert len(store.read().buckets) == 2  # 20 sessions, one audio and one transcript bucket
    wall.advance(3600)
    report = shredder.sweep()
    assert len(report.buckets) == 1 and set(report.buckets[0].sessions) == set(sessions)


def _bucket_rows_opened(monkeypatch) -> list[int]:
    """The handles of the bucket rows opened from here on (each is decrypted when opened)."""
    from edge.store.rows import RootKeys

    opened: list[int] = []
    real = RootKeys.open_bucket

    def counted(keys: RootKeys, handle: int, sealed: bytes):
        opened.append(handle)
        return real(keys, handle, sealed)

    monkeypatch.setattr(RootKeys, "open_bucket", counted)
    return opened


def test_a_sweep_with_nothing_due_opens_only_the_buckets_made_since_the_last_shred(tmp_path, write_config, monkeypatch):
    """The due check of every start and sweep reads the state row's bound on the buckets'
    expiries (docs/FORMATS.md section 3), not every bucket row: only the rows made since the
    bound was last stored (by a shred) are opened, so a bucket that expires before the bound (a
    shorter policy, used later) still goes on time, and a state row without the bound (an
    older edge wrote it) has every row opened."""
    import sqlite3
    from contextlib import closing

    from edge.store.rows import RootKeys, state_document, state_from

    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    for _ in range(4):  # kept 24 h and 30 d, in 1 h windows: two buckets an hour
        record(store, clock, config, "parent")
        wall.advance(3600)
    opened = _bucket_rows_opened(monkeypatch)
    assert shredder.sweep().empty and opened == []  # each new bucket joined the bound in its commit
    child = record(store, clock, config, "child")  # audio 1 h: before every parent bucket
    opened.clear()  # the recording itself opened its buckets
    assert shredder.sweep().empty and opened == []
    wall.advance(3600)
    report = shredder.sweep()
    assert [(b.profile, b.kind, b.sessions) for b in report.buckets] == [("child", "audio", (child,))]
    opened.clear()
    assert shredder.sweep().empty and opened == []  # the shred stored the bound exact
    keys = RootKeys(store.vault.read("current"))
    with DataLock(store.data_dir), closing(sqlite3.connect(store.data_dir / "keystore.db", isolation_level=None)) as db:
        plain = state_from(keys.open_state(db.execute("SELECT value FROM meta WHERE name = 'state'").fetchone()[0]))
        assert plain[6] is not None  # the state row as an older edge writes it: no bound
        db.execute("UPDATE meta SET value = ? WHERE name = 'state'", (keys.seal_state(state_document(*plain[:6])),))
    opened.clear()
    assert shredder.sweep().empty and len(set(opened)) == len(opened) == 9  # every live row


@pytest.mark.parametrize("profile", ["child", "parent"])
def test_inactive_profile_is_shredded(tmp_path, write_config, profile):
    """Child or adult: a profile unused for its inactive_after loses everything it kept."""
    retention = {"child": replace(CHILD, inactive_after="2d"), "parent": replace(PARENT, inactive_after="2d")}
    config, wall, clock, store, shredder = setup(tmp_path, write_config, **{profile: retention[profile]})
    record(store, clock, config, profile)
    wall.advance(2 * 86400)
    report = shredder.sweep()
    assert {(b.kind, b.reason) for b in report.buckets} == {("audio", "expired"), ("transcript", "inactive")}
    assert store.read().sessions == {}


# -- remnant tests: the definition of crypto-shredding --------------------------------


def test_remnant_after_shred(tmp_path, write_config):
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    doomed = record(store, clock, config, "child")  # audio expires in 1h
    wall.advance(2 * 3600)
    live = record(store, clock, config, "child")
    data_dir = config.device.data_dir
    image = tmp_path / "forensic-image"
    shutil.copytree(data_dir, image)  # a copy of the whole card, before the shred
    wall.advance(3600 - 10 * 60)  # past the first session's audio expiry only
    report = shredder.sweep()
    assert [b.sessions for b in report.buckets] == [(doomed,)]
    old = [recording_path(image, doomed), recording_path(image, live), transcript_path(image, doomed)]
    assert openable(store, old) == [False, True, True]  # the shredded audio opens with nothing
    # Now the whole old folder, old keystore included, beside the current vault.
    shutil.rmtree(data_dir)
    shutil.copytree(image, data_dir)
    with pytest.raises(KeystoreError):
        Keystore(data_dir, store.vault).read()


def session_lines(log: bytes, session: str) -> list[dict]:
    """A session's session.created and session.sealed lines in (a copy of) the audit log."""
    lines = [json.loads(line) for line in log.splitlines()]
    return [e for e in lines if e["type"] in ("session.created", "session.sealed") and e["fields"]["session"] == session]


def held_keys(store) -> dict[str, str]:
    """Every details key the device holds now (session -> key, from the keystore's rows)."""
    return {entry.id: entry.details for entry in store.read().sessions.entries() if entry.details}


def opened(entry: dict, keys: dict[str, str]) -> dict | None:
    """A line's sealed details, opened with the keys given (None: they do not open)."""
    session = entry["fields"]["session"]
    return open_sealed(entry["fields"]["sealed"], keys.get(session), session, entry["type"])


def test_remnant_in_the_audit_log_after_shred(tmp_path, write_config):
    """A kept session's start and length are in the log only sealed under its own details
    key, and its lines say only the hour they were written in: a copy of the log taken before
    the shred of its last data opens them with the keys held then, and with none of the keys
    the device holds after it; the chain still verifies."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    doomed = record(store, clock, config, "child")  # its transcript, kept longest, expires in 7 days
    wall.advance(6 * 86400)
    live = record(store, clock, config, "child")
    copy = (config.device.data_dir / "audit.jsonl").read_bytes()  # taken before the shred
    mine = {session: session_lines(copy, session) for session in (doomed, live)}
    for lines in mine.values():
        assert [e["type"] for e in lines] == ["session.created", "session.sealed"]
        assert all(e["fields"]["details"] == 1 and not {"created", "seconds"} & e["fields"].keys() for e in lines)
        assert all(e["mono"] is None and e["wall"].endswith(":00:00+00:00") for e in lines)  # the hour, no more
    signing = [json.loads(line) for line in copy.splitlines()][mine[doomed][-1]["seq"]]  # the checkpoint in its last write
    assert signing["type"] == "checkpoint" and signing["mono"] is None and signing["wall"].endswith(":00:00+00:00")
    assert iso_utc(START).encode() not in copy  # the doomed session's start, by the trusted clock
    before = held_keys(store)
    assert [opened(e, before) for e in mine[doomed]] == [{"created": iso_utc(START)}, {"seconds": round(len(PCM) / 32000, 3)}]
    wall.advance(86400)  # past the first session's transcript expiry, not the second's
    shredder.sweep()
    assert doomed not in store.read().sessions and live in store.read().sessions
    after = held_keys(store)
    assert [opened(e, after) for e in mine[doomed]] == [None, None]  # forgotten with the data
    assert all(opened(e, after) is not None for e in mine[live])
    assert verify(AuditLog(config.device.data_dir), store, clock.now(), timedelta(seconds=2)).ok


def test_a_forgotten_session_leaves_no_trace_in_its_voiceprints_heard(tmp_path, write_config):
    """A voiceprint's `heard` (logged by voice.forgotten and profile.kept) is set by every
    session: forgetting the latest falls back to the one before, not its exact start."""
    from edge.disk.lock import DataLock
    from edge.store.records import Voiceprint

    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    with DataLock(config.device.data_dir), store.transaction() as data:
        data.voices["child"] = Voiceprint("child", START, START, 3.0, 3, True, "test", bytes(1024))
    wall.advance(60)
    kept = record(store, clock, config, "child")
    wall.advance(60)
    forgotten = record(store, clock, config, "child")
    assert store.read().voices["child"].heard == START + timedelta(seconds=120)
    shredder.forget(ForgetRequest(session=forgotten))
    after = store.read()
    assert after.voices["child"].heard == after.sessions[kept].created == START + timedelta(seconds=60)
    shredder.forget(ForgetRequest(session=kept))
    assert store.read().voices["child"].heard == START  # its enrolment: nothing later stays


@pytest.mark.parametrize("which", ["session", "profile", "all", "before"])
def test_remnant_after_forget(tmp_path, write_config, which):
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    first = record(store, clock, config, "child")
    wall.advance(60)
    second = record(store, clock, config, "child")  # same buckets as the first
    parent = record(store, clock, config, "parent")
    data_dir = config.device.data_dir
    image = tmp_path / "forensic-image"
    shutil.copytree(data_dir, image)
    request = {
        "session": ForgetRequest(session=first),
        "profile": ForgetRequest(profile="child"),
        "all": ForgetRequest(everything=True),
        "before": ForgetRequest(before=START + timedelta(seconds=30)),
    }[which]
    report = shredder.forget(request)
    gone = {"session": [first], "profile": [first, second], "all": [first, second, parent], "before": [first]}[which]
    assert sorted(report.forgotten) == sorted(gone)
    kept = [s for s in (first, second, parent) if s not in gone]
    assert set(store.read().sessions) == set(kept)
    for session in gone:  # neither the deleted files nor any recovered copy open
        assert not recording_path(data_dir, session).exists()
        assert openable(store, [recording_path(image, session), transcript_path(image, session)]) == [False, False]
    for session in kept:  # everything live still opens
        assert openable(store, [recording_path(data_dir, session), transcript_path(data_dir, session)]) == [True, True]
    log, keys = (image / "audit.jsonl").read_bytes(), held_keys(store)
    for session in gone:  # and the log copied before keeps nothing of theirs a key the device holds opens
        lines = session_lines(log, session)
        assert len(lines) == 2 and all(opened(e, keys) is None for e in lines)
    for session in kept:  # a session that stays keeps its details readable, in a re-keyed bucket too
        assert all(opened(e, keys) is not None for e in session_lines(log, session))
    if which in ("session", "before"):
        assert len(report.rekeyed) == 2  # the child's audio and transcript buckets got new keys
        assert all(b.retiring_identity is None for b in store.read().buckets.values())


def test_matching_shows_what_a_forget_would_remove_and_changes_nothing(tmp_path, write_config):
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    session = record(store, clock, config, "child")
    before = store.path.read_bytes()
    assert [s.id for s in shredder.matching(ForgetRequest(everything=True))] == [session]
    assert store.path.read_bytes() == before and session in store.read().sessions


# -- crashes between the steps --------------------------------------------------------


@pytest.mark.parametrize("clean", [False, True], ids=["a folder never swept", "a clean folder"])
def test_crash_after_ratchet_before_delete_is_finished_by_next_sweep(tmp_path, write_config, monkeypatch, clean):
    """A power cut after the keys are gone and before the files are: the next sweep deletes
    them (in a clean folder, the marker was removed first, so it scans)."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    data_dir = config.device.data_dir
    if clean:
        shredder.sweep()
    session = record(store, clock, config, "child")
    wall.advance(3600)
    monkeypatch.setattr(Shredder, "_unlink", lambda self, doomed: (_ for _ in ()).throw(SystemExit("power cut")))
    with pytest.raises(SystemExit):
        shredder.sweep()
    monkeypatch.undo()
    path = recording_path(data_dir, session)
    assert path.exists() and openable(store, [path]) == [False] and not (data_dir / "files-clean").exists()  # keys gone already
    report = shredder.sweep()
    assert report.files_deleted == 1 and not path.exists() and (data_dir / "files-clean").exists()


@pytest.mark.parametrize("many", [False, True])
def test_a_clean_folder_deletes_what_it_shreds_by_name_and_never_lists_its_files(tmp_path, write_config, monkeypatch, many):
    """Once a sweep has left the folder clean, the next shred deletes its sessions' files by
    name (100,000 retained sessions are 200,000 files: listing them cost every start half a
    second), including the temp copy a power cut left of a transcript being written. `many`:
    a purge of most transcripts lists their folder once to find the temp copies (cheaper than
    trying every name), and still deletes only those of what it dropped."""
    from edge.retention import shredder as module

    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    data_dir = config.device.data_dir
    shredder.sweep()
    assert (data_dir / "files-clean").exists()
    kept = record(store, clock, config, "parent")
    real_replace = os.replace

    def power_cut_before_the_rename(source, target, **kwargs):
        if str(target).endswith(".json.age"):
            raise SystemExit("power cut")
        real_replace(source, target, **kwargs)

    monkeypatch.setattr(os, "replace", power_cut_before_the_rename)
    with pytest.raises(SystemExit):
        record(store, clock, config, "child")
    monkeypatch.undo()
    [cut] = [s for s in store.read().sessions.values() if s.id != kept]
    temp = data_dir / "transcripts" / f".{cut.id}.json.age.0.tmp"
    assert temp.exists() and recording_path(data_dir, cut.id).exists()
    stray = recording_path(data_dir, "0123456789abcdef")  # not edge's doing in a clean folder: proves nothing is listed
    stray.write_bytes(b"")
    kept_temp = data_dir / "transcripts" / f".{kept}.json.age.0.tmp"  # of a transcript that stays: left alone
    kept_temp.write_bytes(b"")
    wall.advance(8 * 86400)  # the child's audio and transcript and the parent's audio are due, not the parent's transcript
    listed: list[str] = []
    from edge.disk.files import names_in as real_names_in

    def names_in(root: Path, folder: str) -> list[str]:
        if not many:
            pytest.fail("a clean folder was listed")
        listed.append(folder)
        return real_names_in(root, folder)

    monkeypatch.setattr(module, "files_in", lambda *args: pytest.fail("a clean folder's files were listed"))
    monkeypatch.setattr(module, "names_in", names_in)
    monkeypatch.setattr(module, "LIST_TEMPS_OVER", 1_000 if many else 0)
    report = shredder.sweep()
    assert listed == (["transcripts"] if many else [])
    assert {b.kind for b in report.buckets if cut.id in b.sessions} == {"audio", "transcript"}
    assert not temp.exists() and not recording_path(data_dir, cut.id).exists()
    assert not recording_path(data_dir, kept).exists() and transcript_path(data_dir, kept).exists() and kept_temp.exists()
    assert stray.exists() and (data_dir / "files-clean").exists()


def test_the_marker_is_gone_for_good_before_data_is_dropped(tmp_path, write_config, monkeypatch):
    """`files-clean` is removed and the data folder fsynced before the shred's commit, so no
    power cut can keep the commit and bring the marker back."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    data_dir = config.device.data_dir.resolve()
    shredder.sweep()
    record(store, clock, config, "child")
    wall.advance(3600)
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), (data_dir / "files-clean").exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setattr(Keystore, "destroy_buckets", lambda *args: (_ for _ in ()).throw(SystemExit("power cut")))
    with pytest.raises(SystemExit):
        shredder.sweep()
    assert (str(data_dir), False) in synced  # the folder itself, with the marker gone


@pytest.mark.parametrize("lost", ["the root key", "the keystore"])
def test_files_left_by_a_lost_root_or_keystore_are_deleted_from_a_clean_folder(tmp_path, write_config, lost):
    """A power cut takes the kernel keyring's root (the agent starts afresh), or a damaged
    keystore is moved aside as its error advises: every file kept before is an orphan, and the
    next sweep finds them although the folder was clean."""
    from edge.crypto.vault import KeyringVault
    from edge.store.keystore import Access
    from edge.values import KeyringKind

    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    data_dir = config.device.data_dir
    shredder.sweep()
    session = record(store, clock, config, "parent")
    store.close()
    if lost == "the root key":
        KeyringVault(data_dir, KeyringKind.SESSION).erase("current")  # a restart empties the kernel keyring...
        marker = json.loads((data_dir / "vault").read_text())
        (data_dir / "vault").write_text(json.dumps({**marker, "boot": "0" * 36}))  # ...and the boot id is new
    else:
        for name in ("keystore.db", "keystore.db-wal", "keystore.db-shm"):
            if (data_dir / name).exists():
                (data_dir / name).rename(data_dir / f"{name}.damaged")
    fresh = wiring.open_store(config, Access.AGENT)
    report = wiring.make_shredder(config, store=fresh, clock=clock).sweep()
    assert report.files_deleted == 2
    assert not recording_path(data_dir, session).exists() and not transcript_path(data_dir, session).exists()


def test_crash_in_the_middle_of_a_rekey_is_finished_by_next_sweep(tmp_path, write_config, monkeypatch):
    from edge.retention import shredder as module

    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    sessions = [record(store, clock, config, "child") for _ in range(4)]
    calls = []
    real = rekey_in_place

    def crash_on_third(handle, identities, recipient):
        calls.append(1)
        if len(calls) == 3:
            raise SystemExit("power cut")
        real(handle, identities, recipient)

    monkeypatch.setattr(module, "rekey_in_place", crash_on_third)
    with pytest.raises(SystemExit):
        shredder.forget(ForgetRequest(session=sessions[0]))
    monkeypatch.undo()
    data_dir = config.device.data_dir
    live = [recording_path(data_dir, s) for s in sessions[1:]]
    assert openable(store, live) == [True, True, True]  # nothing lost: the retiring key still opens the rest
    report = shredder.sweep()
    assert sorted(report.rekeyed) and all(b.retiring_identity is None for b in store.read().buckets.values())
    assert openable(store, live) == [True, True, True]
    assert not recording_path(data_dir, sessions[0]).exists()


# -- the real scheduler ---------------------------------------------------------------


def _scheduled(config, clock, reports):
    """The keystore, audit log and running retention service the composition root makes."""
    store = wiring.open_store(config)
    service = wiring.make_retention(wiring.make_shredder(config, store=store, clock=clock), config, reports.append)
    return store, service


@pytest.mark.parametrize("fails", ["placing the next job", "the sweep"])
def test_one_failure_does_not_leave_the_next_expiry_to_the_periodic_sweep(tmp_path, write_config, fails):
    """The scheduler keeps one job, at the earliest expiry: a placement that fails once (a
    vault read, say), or a sweep that fails once, must not lose it, or every later expiry would
    wait for the periodic sweep (10 min here)."""
    config = load_config(write_config(mode="always", child=Retention("child", "4s", "7d"), sweep="10m"))
    clock = wiring.make_clock(config)
    (store, _audit), service = _scheduled(config, clock, [])
    first = record_in_process(store, clock, config, "child")
    time.sleep(2.2)  # the next audio bucket expires about 2 s later (1 s windows)
    second = record_in_process(store, clock, config, "child")
    service.catch_up()
    calls: list[int] = []
    target = "_place_next" if fails == "placing the next job" else "sweep"
    real = getattr(service, target) if target == "_place_next" else service.shredder.sweep

    def once_broken():
        calls.append(1)
        if len(calls) == 2:  # the second call: after the first bucket's job
            raise KeystoreError("a vault read failed (injected)")
        return real()

    if target == "_place_next":
        service._place_next = once_broken
    else:
        service.shredder.sweep = once_broken
    service.start()
    try:
        data = config.device.data_dir
        assert wait_for(lambda: not recording_path(data, first).exists(), 15)
        assert wait_for(lambda: not recording_path(data, second).exists(), 15), "left to the periodic sweep"
        assert len(calls) >= 3
    finally:
        service.stop()


def test_bucket_job_fires_at_expiry(tmp_path, write_config):
    config = load_config(write_config(mode="always", child=Retention("child", "3s", "7d"), sweep="10m"))
    clock = wiring.make_clock(config)
    reports: list = []
    (store, audit), service = _scheduled(config, clock, reports)  # the sweep is 10 min away: only the bucket job can do it
    service.start()
    try:
        recorder = wiring.make_recorder(store, audit, clock, service)
        session = os.urandom(8).hex()
        sealed = recorder.begin(session, Tag(config.profile("child"), TagRule.GIVEN))
        sealed.write(PCM)
        sealed.finish(Transcript("", ()))
        path = recording_path(config.device.data_dir, session)
        assert path.exists()
        assert wait_for(lambda: not path.exists() and reports, 12), "the bucket's date job did not shred it"
        late = reports[-1].buckets[0].late
        assert timedelta(0) <= late < timedelta(seconds=5)  # the sweep is 10 minutes away
    finally:
        service.stop()


def test_the_start_places_one_job_at_the_earliest_expiry_opening_no_bucket_row(tmp_path, write_config, monkeypatch):
    """The agent's start schedules the keystore's earliest expiry from the state row's bound
    (not a job per bucket, each row opened: O(buckets) at every start); that job's sweep
    shreds a bucket made before the start on time, and places the next."""

    config = load_config(write_config(mode="always", child=Retention("child", "4s", "7d"), sweep="10m"))
    clock = wiring.make_clock(config)
    reports: list = []
    (store, _audit), service = _scheduled(config, clock, reports)  # the sweep is 10 min away: only the start's job can do it
    sessions = [record_in_process(store, clock, config, profile) for profile in ("parent", "parent", "child")]
    with store.transaction() as data:
        store.ratchet(data)  # as every shred does: the bound is stored exact
    service.catch_up()  # what the agent's start does first
    opened = _bucket_rows_opened(monkeypatch)
    service.start()
    try:
        assert opened == []
        path = recording_path(config.device.data_dir, sessions[-1])
        assert wait_for(lambda: not path.exists() and reports, 12), "the start's job did not shred it"
        assert [(b.profile, b.kind) for b in reports[-1].buckets] == [("child", "audio")]
        assert timedelta(0) <= reports[-1].buckets[0].late < timedelta(seconds=5)
    finally:
        service.stop()


def test_scheduler_does_not_wait_on_a_clock_set_back(tmp_path, write_config):
    """The trusted clock is an hour ahead of the wall clock (the clock was set back after
    the last mark). A bucket due in 3 trusted seconds must go in about 3 real seconds."""
    config = load_config(write_config(mode="always", child=Retention("child", "3s", "7d"), sweep="10m"))
    data_dir = config.device.data_dir
    ahead = datetime.now(timezone.utc) + timedelta(hours=1)
    data_dir.mkdir(parents=True, exist_ok=True)
    from edge.boot import boot_id

    (data_dir / "clock").write_text(json.dumps({"version": 1, "wall": ahead.isoformat(), "monotonic": time.monotonic(), "boot": boot_id()}))
    clock = wiring.make_clock(config)
    assert clock.read().set_back > timedelta(minutes=59)
    reports: list = []
    (store, audit), service = _scheduled(config, clock, reports)
    service.start()
    try:
        session = os.urandom(8).hex()
        recorder = wiring.make_recorder(store, audit, clock, service)
        sealed = recorder.begin(session, Tag(config.profile("child"), TagRule.GIVEN))
        sealed.finish(Transcript("", ()))
        assert wait_for(lambda: not recording_path(data_dir, session).exists(), 12)
    finally:
        service.stop()


def test_the_watch_survives_a_failing_clock_and_keeps_sweeping(tmp_path, write_config, caplog):
    """The periodic sweep is paced by the watch thread: an error in it (here the clock
    raising for a few ticks) is said once and retried, never the end of retention."""
    config = load_config(write_config(mode="always", child=Retention("child", "2s", "7d"), sweep="1s"))
    failing = threading.Event()

    def wall() -> float:
        if failing.is_set() and threading.current_thread().name == "edge-clock-watch":
            raise OSError("clock unreadable")
        return time.time()

    clock = wiring.make_clock(config, wall=wall)
    reports: list = []
    (store, audit), service = _scheduled(config, clock, reports)
    service.start()
    try:
        failing.set()
        time.sleep(3.5)  # three ticks fail
        failing.clear()
        recorder = wiring.make_recorder(store, audit, clock)  # no date job: only the periodic sweep
        session = os.urandom(8).hex()
        recorder.begin(session, Tag(config.profile("child"), TagRule.GIVEN)).finish(Transcript("", ()))
        assert wait_for(lambda: not recording_path(config.device.data_dir, session).exists(), 8), "the periodic sweep stopped"
    finally:
        service.stop()
    said = caplog.text  # the library logs; the command line prints the log on stderr
    assert said.count("the retention watch failed (retrying every second): clock unreadable") == 1, said


# -- whole processes: faketime, a running agent, kill -9 --------------------------------


def test_time_travel_whole_process(write_config, speech):
    config = write_config(mode="always")
    clip = speech.join(speech.say("메시지"), 1.0)
    ran = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "child", "--json")
    assert ran.returncode == 0, ran.stderr
    session = json.loads(ran.stdout)["session"]

    back = faketime("-1y", "purge", config=config, synced=False)  # the clock set back a year (by hand: NTP does not vouch for it)
    assert back.returncode == 0, back.stderr
    assert "nothing is due" in back.stdout
    audit = AuditLog(config.parent / "data")
    [set_back] = [e for e in audit.entries() if e["type"] == "clock.set_back"]  # the anomaly is audited
    assert set_back["fields"]["seconds"] > 364 * 86400

    later = faketime("+2h", "purge", config=config)  # two hours later: the child's audio (1h) is due
    assert later.returncode == 0, later.stderr
    assert "shredded audio bucket child.audio." in later.stdout and "expired" in later.stdout

    # Back to the real time: nothing comes back, and the export refuses.
    status = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)
    assert [(s["session"], s["audio_expires"]) for s in status["sessions"]] == [(session, None)]
    refused = edge_agent(
        "--config", str(config), "export", "--session", session, "--out", str(config.parent / "x.wav"), "--purpose", "playback"
    )
    assert refused.returncode != 0 and "its audio was shredded when it expired" in refused.stderr
    assert status["sessions"][0]["audio_shredded"] is not None
    shown = edge_agent("--config", str(config), "status").stdout
    assert f"audio shredded (was kept until {status['sessions'][0]['audio_shredded']})" in shown and "not kept" not in shown
    refusals = [e["fields"] for e in audit.entries() if e["type"] == "export.refused"]
    assert refusals[-1]["reason"] == "shredded"

    future = faketime("@2038-01-20 00:00:00", "purge", config=config)  # forward to 2038
    assert future.returncode == 0, future.stderr
    assert "shredded transcript bucket" in future.stdout
    assert json.loads(edge_agent("--config", str(config), "status", "--json").stdout)["sessions"] == []
    back_again = faketime("-1y", "purge", config=config)
    assert back_again.returncode == 0 and "nothing is due" in back_again.stdout


def test_forget_cli(write_config, speech):
    config = write_config(mode="always")
    clip = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0)
    ran = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "child", "--json")
    sessions = [json.loads(line)["session"] for line in ran.stdout.splitlines()]
    unconfirmed = edge_agent("--config", str(config), "forget", "--session", sessions[0], stdin=subprocess.DEVNULL)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    forgot = edge_agent("--config", str(config), "forget", "--session", sessions[0], "--yes")
    assert forgot.returncode == 0, forgot.stderr
    assert "forgot 1 session(s)" in forgot.stdout and "re-keyed bucket" in forgot.stdout
    unknown = edge_agent("--config", str(config), "forget", "--session", "feedfeedfeedfeed", "--yes")
    assert unknown.returncode == 2 and "no retained session" in unknown.stderr
    bad_date = edge_agent("--config", str(config), "forget", "--before", "last tuesday", "--yes")
    assert bad_date.returncode == 2 and "ISO 8601" in bad_date.stderr
    everything = edge_agent("--config", str(config), "forget", "--all", "--yes")
    assert everything.returncode == 0 and "forgot 1 session(s)" in everything.stdout
    assert list((config.parent / "data").rglob("*.age")) == []


@pytest.mark.mic
def test_running_agent_shreds_on_schedule_and_catches_up_at_start(virtual_mic, write_config, speech):
    config = write_config(mode="always", child=Retention("child", "4s", "7d"))
    agent = MicAgent(virtual_mic, config, "--profile", "child")
    subprocess.run(["paplay", str(speech.say("메시지"))], env=virtual_mic, check=True)
    data_dir = config.parent / "data"
    assert wait_for(lambda: list((data_dir / "recordings").glob("*.age")), 5), "no session was recorded"
    assert wait_for(lambda: not list((data_dir / "recordings").glob("*.age")), 10), "not shredded on schedule"
    sessions, stderr, code = agent.stop()
    assert code == 0 and "shredded audio bucket" in stderr

    # Off: a session recorded, then the agent not running past its expiry.
    clip = speech.join(speech.say("아버지"), 1.0)
    assert edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "child").returncode == 0
    assert list((data_dir / "recordings").glob("*.age"))
    time.sleep(5)
    restarted = MicAgent(virtual_mic, config)
    assert "shredded audio bucket" in restarted.stderr.split("listening")[0]  # before the microphone opened
    restarted.stop()


def test_kill_9_during_purge_then_purge_is_consistent(tmp_path, write_config):
    """Sessions an hour apart, from 20 h ago to 20 h ahead; purges under faketime at later and
    later instants each have buckets to shred, and each is killed at a random point."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    wall.set_wall(datetime.now(timezone.utc) - timedelta(hours=20))
    for _ in range(40):
        record(store, clock, config, "child")
        wall.advance(3600)
    data_dir = config.device.data_dir
    (data_dir / "clock").unlink(missing_ok=True)  # the processes below use the real (faked) clock
    rng = random.Random(2026)
    killed_running = 0
    for hours in range(0, 25, 2):
        process = subprocess.Popen(
            ["faketime", "-f", f"+{hours}h", sys.executable, "-m", "edge", "--config", str(config.path), "purge"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, "DONT_FAKE_MONOTONIC": "1"},
        )
        time.sleep(rng.uniform(0.05, 0.4))
        killed_running += process.poll() is None
        process.kill()
        process.communicate()
    final = faketime("+25h", "purge", config=config.path)
    assert final.returncode == 0, final.stderr
    fresh = Keystore(data_dir, store.vault)
    data = fresh.read()
    now = TrustedClock(data_dir).now()
    assert all(b.expires > now and b.retiring_identity is None for b in data.buckets.values())
    files = sorted(data_dir.rglob("*.age"))
    expected = sorted(
        [recording_path(data_dir, s.id) for s in data.sessions.values() if s.audio_bucket]
        + [transcript_path(data_dir, s.id) for s in data.sessions.values() if s.transcript_bucket]
    )
    assert files == expected  # no orphans, nothing missing
    assert len(files) > 10 and all(openable(fresh, files))  # the live transcripts still open
    assert killed_running > 0, "every purge had finished before its kill: the test proved nothing"


@pytest.mark.parametrize("answer,forgotten", [("n", False), ("y", True)])
def test_forget_asks_in_a_terminal(write_config, speech, answer, forgotten):
    config = write_config(mode="always")
    ran = edge_agent("--config", str(config), "run", "--input", str(speech.join(speech.say("메시지"), 1.0)), "--profile", "child", "--json")
    session = json.loads(ran.stdout)["session"]
    process, controller = forget_in_a_terminal(config, "--all")
    os.write(controller, f"{answer}\n".encode())
    out, err = process.communicate(timeout=60)
    os.close(controller)
    assert process.returncode == 0, err
    status = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)
    assert (session not in [s["session"] for s in status["sessions"]]) == forgotten
    assert ("forgot 1 session(s)" in out) == forgotten and ("nothing was forgotten" in out) != forgotten


def test_forget_and_purge_say_whose_and_what_comes_next_once(write_config, speech):
    config = write_config(mode="always")
    edge_agent("--config", str(config), "run", "--input", str(speech.join(speech.say("메시지"), 1.0)), "--profile", "child")
    purged = edge_agent("--config", str(config), "purge")
    assert "nothing is due" in purged.stdout and "next: child's audio at" in purged.stdout and "(expired)" in purged.stdout
    asked = {}
    for selector in (["--profile", "child"], ["--all"]):
        process, controller = forget_in_a_terminal(config, *selector)
        os.write(controller, b"n\n")
        asked[selector[0]] = process.communicate(timeout=60)[0]
        os.close(controller)
    assert "Forget profile child: 1 session(s)? This cannot be undone." in asked["--profile"], asked
    assert "Forget everything: 1 session(s) of child? This cannot be undone." in asked["--all"], asked


def test_session_open_during_a_rekey_stays_whole(tmp_path, write_config):
    """A forget re-keys the bucket while another session of it is still being recorded:
    its header is rewritten under it, its later chunks and its transcript still open."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    recorder = wiring.make_recorder(store, shredder.audit, clock)
    live_id = os.urandom(8).hex()
    live = recorder.begin(live_id, Tag(config.profile("child"), TagRule.GIVEN))
    live.write(PCM)
    doomed = record(store, clock, config, "child")  # same buckets
    report = shredder.forget(ForgetRequest(session=doomed))
    assert len(report.rekeyed) == 2
    live.write(PCM)  # still appending after the header was rewritten
    live.finish(Transcript("메시지", (Word("메시지", 0.5, 1.0, 1.0),)))
    data_dir = config.device.data_dir
    assert openable(store, [recording_path(data_dir, live_id), transcript_path(data_dir, live_id)]) == [True, True]
    identities = [i for b in store.read().buckets.values() for i in store.identities(b)]
    assert decrypt(recording_path(data_dir, live_id).read_bytes(), identities)[44:] == PCM + PCM


def test_the_watchdog_hears_the_agent_only_while_a_shred_could_take_the_data_lock(tmp_path, write_config):
    """A writer hung holding the data folder's lock stops every shred: the heartbeats that
    systemd's watchdog waits for stop with it (so systemd restarts the agent), and resume
    once the lock is free."""
    config = load_config(write_config(mode="always"))
    (store, _audit), service = _scheduled(config, wiring.make_clock(config), [])
    systemd = NotifySocket(tmp_path / "notify")
    service.notifier = Notifier.from_environment(systemd.env(watchdog_seconds=0.4))
    service.start()
    hung, release = threading.Event(), threading.Event()

    def hang_holding_the_lock() -> None:
        with DataLock(config.device.data_dir):
            hung.set()
            release.wait(30)

    holder = threading.Thread(target=hang_holding_the_lock)
    try:
        assert "WATCHDOG=1" in systemd.states(3), "no heartbeat while the lock is free"
        holder.start()
        assert hung.wait(5)
        systemd.states(0.5)  # a heartbeat already past the lock
        assert systemd.states(2.5) == [], "a heartbeat while a writer holds the data lock"
        release.set()
        assert "WATCHDOG=1" in systemd.states(5), "the heartbeats did not resume once the lock was free"
    finally:
        release.set()
        holder.join(5) if holder.is_alive() else None
        service.stop()
        systemd.close()


def test_forgetting_a_profiles_sessions_since_an_instant_leaves_its_older_ones_and_other_profiles(tmp_path, write_config):
    """A spoken "forget today" is `ForgetRequest(profile, since)`: the profile's sessions from
    then on go (a bucket they share with an older session is re-keyed, not destroyed); its
    older sessions and another profile's stay, and open as before."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config)
    old = record(store, clock, config, "child")
    wall.advance(600)
    since = clock.now()
    new = record(store, clock, config, "child")
    parent = record(store, clock, config, "parent")
    data_dir = config.device.data_dir
    report = shredder.forget(ForgetRequest(profile="child", since=since))
    assert report.forgotten == [new] and report.voices == []
    assert set(store.read().sessions) == {old, parent}
    files = [p(data_dir, s) for s in (old, parent) for p in (recording_path, transcript_path)]
    assert openable(store, files) == [True] * 4
    assert not recording_path(data_dir, new).exists() and not transcript_path(data_dir, new).exists()
    assert ForgetRequest(profile="child", since=since).describe() == f"profile child since {since.isoformat()}"


VOICE_COMMANDS = '[voice_commands]\nforget_today = "오늘 기록 지워"\nguest_on = "게스트 모드"\nguest_off = "게스트 모드 꺼"'


def test_an_unknown_voices_spoken_forget_never_reaches_a_known_speakers_sessions(tmp_path, write_config):
    """The child is the strictest profile here, so an unknown voice is tagged as the child
    too: its "forget today" reaches the sessions that named nobody, never the child's own."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config, household=VOICE_COMMANDS)
    spoken = wiring.make_spoken(config, shredder)
    assert spoken is not None
    stranger = Tag(strictest_policy(config), TagRule.STRICTEST)
    assert stranger.profile.name == "child"
    childs = record(store, clock, config, "child")
    strangers = record_in_process(store, clock, config, "child", rule="strictest")
    wall.advance(1)
    reply = spoken.run("forget_today", stranger, clock.now(), "microphone")
    assert reply.startswith("Forgot what you said today (1 ")
    assert set(store.read().sessions) == {childs}
    wall.advance(1)
    assert spoken.run("forget_today", Tag(config.profile("child"), TagRule.LISTENER), clock.now(), "kids").startswith("Forgot")
    assert store.read().sessions == {} and strangers not in store.read().sessions


def test_an_unknown_voice_cannot_end_guest_mode_even_when_the_strictest_profile_is_an_adults(tmp_path, write_config):
    """Ending guest mode widens retention: an adult must be named (by listener, voice, the
    active profile), whatever profile the strictest policy is."""
    config, _wall, clock, _store, shredder = setup(
        tmp_path, write_config, others={"guest": Retention("adult", "0s", "0s")}, household=VOICE_COMMANDS
    )
    spoken = wiring.make_spoken(config, shredder)
    assert spoken is not None
    stranger = Tag(strictest_policy(config), TagRule.STRICTEST)
    assert stranger.profile.name == "guest" and not stranger.profile.is_child
    parent = Tag(config.profile("parent"), TagRule.LISTENER)
    spoken.run("guest_on", stranger, clock.now(), "microphone")
    assert spoken.run("guest_off", stranger, clock.now(), "microphone").startswith("Only an adult")
    assert spoken.narrowed(parent).rule == TagRule.GUEST
    assert spoken.run("guest_off", parent, clock.now(), "hall") == "Guest mode is off."
    assert spoken.narrowed(parent) == parent


def test_guest_mode_outlives_a_restart_and_ends_at_its_limit(tmp_path, write_config):
    """Guest mode narrows retention: a restart (a crash, the watchdog's) must not end it early,
    so it is kept in the keystore; it still ends by itself at guest_limit."""
    config, wall, clock, _store, shredder = setup(tmp_path, write_config, household=VOICE_COMMANDS)
    parent = Tag(config.profile("parent"), TagRule.LISTENER)
    before = wiring.make_spoken(config, shredder)
    assert before is not None
    before.run("guest_on", parent, clock.now(), "hall")
    after = wiring.make_spoken(config, shredder)  # the agent started again
    assert after is not None and after.narrowed(parent).rule == TagRule.GUEST
    wall.advance(config.voice_commands.guest_limit.total_seconds() + 1)
    assert after.narrowed(parent) == parent


def test_a_spoken_forget_waits_for_the_same_voices_yes_not_an_unknown_voice_tagged_as_the_same_profile(tmp_path, write_config):
    """The written policy says a forget "waits for the confirm phrase from the same voice": an
    unknown voice, tagged as the strictest profile (the child's here), neither confirms the
    child's own forget nor has its own confirmed by the child."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config, household=VOICE_COMMANDS + '\nconfirm = "네"')
    spoken = wiring.make_spoken(config, shredder)
    assert spoken is not None
    stranger = Tag(strictest_policy(config), TagRule.STRICTEST)
    child = Tag(config.profile("child"), TagRule.LISTENER)
    assert stranger.profile.name == child.profile.name == "child"
    childs = record(store, clock, config, "child")
    strangers = record_in_process(store, clock, config, "child", rule="strictest")
    wall.advance(1)
    assert spoken.run("forget_today", child, clock.now(), "kids").startswith('Say "네"')
    assert spoken.run("confirm", stranger, clock.now(), "microphone") == "There was nothing to confirm."
    assert set(store.read().sessions) == {childs, strangers}
    assert spoken.run("forget_today", stranger, clock.now(), "microphone").startswith('Say "네"')
    assert spoken.run("confirm", child, clock.now(), "kids").startswith("Forgot")  # the child's own forget, still awaited
    assert set(store.read().sessions) == {strangers}
    assert spoken.run("confirm", stranger, clock.now(), "microphone").startswith("Forgot")
    assert store.read().sessions == {}


def test_with_confirm_on_ending_guest_mode_waits_for_the_same_adults_yes(tmp_path, write_config):
    """Ending guest mode lengthens what is kept: with `confirm` set, guest_off only asks, and
    only the same named adult's yes within the window ends it (not a guest's, in guest mode)."""
    config, wall, clock, _store, shredder = setup(tmp_path, write_config, household=VOICE_COMMANDS + '\nconfirm = "네"')
    spoken = wiring.make_spoken(config, shredder)
    assert spoken is not None
    parent = Tag(config.profile("parent"), TagRule.LISTENER)
    stranger = Tag(strictest_policy(config), TagRule.STRICTEST)
    spoken.run("guest_on", parent, clock.now(), "hall")
    assert spoken.run("guest_off", parent, clock.now(), "hall").startswith('Say "네" within 10 seconds to end guest mode')
    assert spoken.narrowed(parent).rule == TagRule.GUEST  # only asked
    assert spoken.run("confirm", stranger, clock.now(), "microphone") == "There was nothing to confirm."
    assert spoken.narrowed(parent).rule == TagRule.GUEST
    wall.advance(11)
    assert spoken.run("confirm", parent, clock.now(), "hall") == "There was nothing to confirm."  # too late
    assert spoken.narrowed(parent).rule == TagRule.GUEST
    spoken.run("guest_off", parent, clock.now(), "hall")
    assert spoken.run("confirm", parent, clock.now(), "hall") == "Guest mode is off."
    assert spoken.narrowed(parent) == parent
