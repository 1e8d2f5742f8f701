"""The trusted clock against clocks that lie (issue 27, item 5): a monotonic clock faked
decades ahead is refused by the kernel's uptime; a trusted clock that ran ahead of an
NTP-synchronised wall clock is named by status, doctor and the report; `clock rewind`
brings it back, audited, and no retention gets longer, even when it is killed midway."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge import wiring
from edge.audit.log import AuditLog
from edge.config import load_config
from edge.retention.clock import TrustedClock
from edge.retention.rewind import rewind

from support import (
    CHILD,
    START,
    FakeWall,
    Retention,
    ServeAgent,
    edge_agent,
    faketime,
    keystore_rows,
    ntp_env,
    openable,
    record,
    record_in_process,
    retention_parts,
)

YEAR = timedelta(days=365)


@pytest.fixture
def clip(speech):
    return speech.join(speech.say("메시지"), 1.0)


def _status(config: Path, synced: bool = True) -> dict:
    shown = edge_agent("--config", str(config), "status", "--json", env=ntp_env(synced))
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def _audit(config: Path, kind: str) -> list[dict]:
    return [e["fields"] for e in AuditLog(config.parent / "data").entries() if e["type"] == kind]


def _remaining(status: dict) -> dict[tuple[str, str], timedelta]:
    """Per session and kind: how long it is still kept, by the trusted clock of that status."""
    now = datetime.fromisoformat(status["clock"]["now"])
    return {
        (s["session"], kind): datetime.fromisoformat(s[f"{kind}_expires"]) - now
        for s in status["sessions"]
        for kind in ("audio", "transcript")
        if s[f"{kind}_expires"]
    }


# -- a monotonic clock that lies ----------------------------------------------------------------


def test_faketime_with_its_monotonic_clock_moves_nothing(write_config, clip):
    """`faketime -f +10m edge-agent purge`: Debian's libfaketime fakes CLOCK_MONOTONIC to the
    faked epoch, 57 years past the kernel's uptime. That delta is refused: nothing is shredded,
    the clock stays 10 minutes ahead at most, and new sessions expire by the real clock."""
    config = write_config(mode="always")
    [session] = record(config, clip)
    before = _status(config, synced=False)["sessions"]

    jumped = faketime("+10m", "purge", config=config, monotonic=True)
    assert jumped.returncode == 0, jumped.stderr
    assert "nothing is due" in jumped.stdout, jumped.stdout
    assert "the monotonic clock claims 56 years" in jumped.stderr and "FAKETIME_DONT_FAKE_MONOTONIC=1" in jumped.stderr

    after = _status(config, synced=False)
    assert after["sessions"] == before  # the same session, the same expiries
    ahead = datetime.fromisoformat(after["clock"]["now"]) - datetime.now(timezone.utc)
    assert ahead < timedelta(minutes=10, seconds=30)
    [refused] = _audit(config, "clock.impossible")
    assert refused["claimed_seconds"] > 56 * 365 * 86400 and refused["allowed_seconds"] < 60

    [later] = record(config, clip)
    [entry] = [s for s in _status(config, synced=False)["sessions"] if s["session"] == later]
    assert datetime.fromisoformat(entry["audio_expires"]) - datetime.now(timezone.utc) < timedelta(hours=1, minutes=11)
    assert session in [s["session"] for s in _status(config, synced=False)["sessions"]]


def test_the_monotonic_clock_is_checked_against_the_kernels_uptime(tmp_path):
    wall, uptime = FakeWall(), [1000.0]
    clock = TrustedClock(tmp_path, wall=lambda: wall.wall, monotonic=lambda: wall.mono, boot=lambda: "b", uptime=lambda: uptime[0])
    clock.persist()
    wall.mono += 57 * 365 * 86400  # libfaketime: the monotonic clock claims 57 years...
    uptime[0] += 60  # ...while the kernel counted a minute
    wall.set_wall(START - timedelta(days=1))  # and the wall clock is set back: the kernel's minute still counts
    reading = clock.read()
    assert reading.now == START + timedelta(seconds=60)
    assert reading.impossible is not None and reading.impossible.claimed > 56 * 365 * 86400 and reading.impossible.allowed == 60
    assert "not trusted" in reading.notes()[-1]

    # A process whose monotonic clock is genuine, after a mark the faked one wrote: the mark's
    # monotonic time is ahead of its own, and the kernel's count since the mark is used.
    clock.persist()
    honest = TrustedClock(tmp_path, wall=lambda: wall.wall, monotonic=lambda: 1090.0, boot=lambda: "b", uptime=lambda: uptime[0] + 30)
    assert honest.now() == START + timedelta(seconds=90)

    # Where /proc/uptime cannot be read, the monotonic clock is trusted as before (a lie can
    # only make data expire early), and the reading says the check is missing.
    blind = TrustedClock(tmp_path, wall=lambda: wall.wall, monotonic=lambda: wall.mono + 3600, boot=lambda: "b", uptime=lambda: None)
    assert blind.now() == START + timedelta(seconds=60 + 3600) and not blind.read().uptime_known

    # A mark of an older edge (no uptime in it): no more than the whole uptime can have passed.
    (tmp_path / "clock").write_text(json.dumps({"version": 1, "wall": START.isoformat(), "monotonic": 500.0, "boot": "b"}))
    old = TrustedClock(tmp_path, wall=lambda: START.timestamp() - 86400, monotonic=lambda: 9e8, boot=lambda: "b", uptime=lambda: 2000.0)
    assert old.now() == START and old.read().impossible is not None


# -- a trusted clock that ran ahead --------------------------------------------------------------


@pytest.fixture
def ahead(write_config, clip):
    """A household whose trusted clock ran 20 years ahead: a session, then a purge while the
    wall clock read 20 years ahead (a broken real-time clock; set by hand, so not synced),
    then, back at the real time, two sessions recorded with expiries 20 years out."""
    config = write_config(mode="always", child=Retention("child", "1h", "7d", inactive_after="2d"))
    record(config, clip)
    jumped = faketime("+20y", "purge", config=config, synced=False)
    assert jumped.returncode == 0 and "shredded audio bucket" in jumped.stdout, jumped.stdout + jumped.stderr
    synced = ntp_env(True)  # back at the real time, NTP has synchronised the wall clock
    sessions = record(config, clip, "child", env=synced) + record(config, clip, "parent", env=synced)
    return config, sessions


def test_a_clock_that_ran_ahead_is_named_by_status_doctor_purge_and_the_report(ahead, tmp_path):
    config, sessions = ahead
    status = _status(config)
    assert status["clock"]["ran_ahead"] and status["clock"]["ahead_seconds"] > 19 * 365 * 86400
    shown = edge_agent("--config", str(config), "status", env=ntp_env(True))
    assert "clock: the trusted clock ran ahead: it is 19 years 364 days ahead" in shown.stdout or "it is 20 years ahead" in shown.stdout
    assert "edge-agent clock rewind" in shown.stdout

    doctor = edge_agent("--config", str(config), "doctor", "--json", "--no-mic", env=ntp_env(True))
    [clock] = [f for f in json.loads(doctor.stdout) if f["check"] == "clock"]
    assert clock["status"] == "warn" and "ran ahead" in clock["detail"] and "clock rewind" in clock["fix"]

    purge = edge_agent("--config", str(config), "purge", env=ntp_env(True))
    assert purge.returncode == 0 and "nothing is due" in purge.stdout
    ran = _audit(config, "clock.ran_ahead")  # once by each process that found it so
    assert ran and all(event["seconds"] > 19 * 365 * 86400 for event in ran)

    page = tmp_path / "report.html"
    made = edge_agent("--config", str(config), "audit", "report", "--html", str(page), env=ntp_env(True))
    assert made.returncode == 0, made.stderr
    report = page.read_text()
    assert "the clock ran ahead of the synchronised time by" in report
    assert "so this was early, not late" in report  # the shreds of the jump, 20 years "late"
    assert "set back" not in report

    # Without NTP's word, the same clocks read as a wall clock set back.
    unsynced = edge_agent("--config", str(config), "status", env=ntp_env(False))
    assert "behind the trusted clock (set back" in unsynced.stdout and "ran ahead" not in unsynced.stdout


def test_rewind_brings_the_clock_back_and_every_session_keeps_the_time_it_had_left(ahead, tmp_path):
    config, sessions = ahead
    data = config.parent / "data"
    image = tmp_path / "before-rewind"
    shutil.copytree(data, image)  # a copy of the card with the late expiries
    before, started = _status(config), time.monotonic()

    ran = edge_agent("--config", str(config), "clock", "rewind", "--yes", env=ntp_env(True))
    assert ran.returncode == 0, ran.stderr
    assert "the trusted clock is back at" in ran.stdout and "4 bucket(s) of 2 retained session(s)" in ran.stdout

    after, elapsed = _status(config), time.monotonic() - started
    assert abs(datetime.fromisoformat(after["clock"]["now"]) - datetime.now(timezone.utc)) < timedelta(seconds=5)
    assert not after["clock"]["ran_ahead"] and after["clock"]["notes"] == []
    then, now = _remaining(before), _remaining(after)
    assert then.keys() == now.keys() and len(now) == 4
    for key, left in now.items():  # never longer; shorter only by the time the test took and a second's rounding
        assert timedelta(0) <= then[key] - left <= timedelta(seconds=elapsed + 1), key

    [done] = _audit(config, "clock.rewound")
    assert done["seconds"] > 19 * 365 * 86400 and done["buckets"] == 4 and done["sessions"] == 2 and "resumed" not in done
    assert json.loads((data / "clock").read_text())["rewind"] == done["request"]
    verified = edge_agent("--config", str(config), "audit", "verify", env=ntp_env(True))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    purge = edge_agent("--config", str(config), "purge", env=ntp_env(True))
    assert "nothing is due" in purge.stdout  # nothing fell due by the rewind
    out = tmp_path / "child.wav"
    exported = edge_agent("--config", str(config), "export", "--session", sessions[0], "--out", str(out), "--purpose", "playback")
    assert exported.returncode == 0 and out.stat().st_size > 44, exported.stderr  # the bucket's key and file are intact
    again = edge_agent("--config", str(config), "clock", "rewind", "--yes", env=ntp_env(True))
    assert again.returncode == 0 and "nothing to bring back" in again.stdout

    # The copy from before opens with nothing the device holds now (the rewind ratcheted the root).
    shutil.rmtree(data)
    shutil.copytree(image, data)
    old = edge_agent("--config", str(config), "status", env=ntp_env(True))
    assert old.returncode == 1 and "cannot be opened with the vault's root key" in old.stderr


def test_rewind_needs_a_synchronised_clock_and_changes_nothing_without_one(ahead):
    config, _sessions = ahead
    data = config.parent / "data"
    rows, mark = keystore_rows(data), (data / "clock").read_bytes()
    refused = edge_agent("--config", str(config), "clock", "rewind", "--yes", env=ntp_env(False))
    assert refused.returncode == 1 and "not NTP-synchronised" in refused.stderr and "nothing was changed" in refused.stderr
    assert keystore_rows(data) == rows and (data / "clock").read_bytes() == mark
    unconfirmed = edge_agent("--config", str(config), "clock", "rewind", env=ntp_env(True), stdin=subprocess.DEVNULL)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert keystore_rows(data) == rows


@pytest.mark.parametrize("point", ["ratchet.staged", "rewind.dated", "rewind.marked"])
def test_a_rewind_killed_at_any_step_is_finished_by_the_next_purge_and_shreds_nothing_early(ahead, point):
    config, sessions = ahead
    before, started = _status(config), time.monotonic()
    crashed = edge_agent("--config", str(config), "clock", "rewind", "--yes", env={**ntp_env(True), "EDGE_CRASH_AT": f"{point}:1"})
    assert crashed.returncode == -9, crashed.stderr
    middle = _status(config)
    assert [s["session"] for s in middle["sessions"]] == [s["session"] for s in before["sessions"]]
    if point == "rewind.dated":  # the keystore is re-dated, the clock still reads ahead: it says so
        assert any("cut short" in note for note in middle["clock"]["notes"]) and middle["clock"]["ran_ahead"]

    finish = ["clock", "rewind", "--yes"] if point == "ratchet.staged" else ["purge"]  # cut before its commit: nothing to finish
    finished = edge_agent("--config", str(config), *finish, env=ntp_env(False))  # finishing needs no NTP
    if point == "ratchet.staged":
        assert finished.returncode == 1 and "not NTP-synchronised" in finished.stderr
        finished = edge_agent("--config", str(config), *finish, env=ntp_env(True))
    assert finished.returncode == 0, finished.stderr
    assert "shredded" not in finished.stdout  # nothing went early

    after, elapsed = _status(config), time.monotonic() - started
    assert abs(datetime.fromisoformat(after["clock"]["now"]) - datetime.now(timezone.utc)) < timedelta(seconds=5)
    then, now = _remaining(before), _remaining(after)
    assert then.keys() == now.keys()
    for key, left in now.items():
        assert timedelta(0) <= then[key] - left <= timedelta(seconds=elapsed + 1), key
    rewound = _audit(config, "clock.rewound")
    assert len(rewound) == 1 and bool(rewound[0].get("resumed")) == (point == "rewind.dated")
    assert not any("cut short" in note for note in after["clock"]["notes"])
    verified = edge_agent("--config", str(config), "audit", "verify", env=ntp_env(True))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_rewind_refuses_while_the_agent_runs(ahead):
    """The agent holds the clock in memory and would write its old mark back."""
    config, _sessions = ahead
    socket = config.parent / "edge.sock"
    config.write_text(config.read_text() + f'\n[[wyoming]]\nuri = "unix://{socket}"\n', encoding="utf-8")
    rows = keystore_rows(config.parent / "data")
    agent = ServeAgent(config, env=ntp_env(True))
    try:
        ran = edge_agent("--config", str(config), "clock", "rewind", "--yes", env=ntp_env(True))
    finally:
        _out, log, code = agent.stop()
    assert code == 0, log
    assert ran.returncode == 1 and "the agent is running: stop it first" in ran.stderr
    assert keystore_rows(config.parent / "data") == rows


# -- in one process: the renames, a stale clock, inactive profiles ------------------------------------


def test_a_process_that_read_the_clock_before_a_rewind_follows_it(tmp_path, write_config, monkeypatch):
    """A rewind by exactly 5 minutes: every child bucket (5-minute windows, one per session)
    takes the id of the bucket before it, so renames must go earliest first. A shredder whose
    clock was read before the rewind takes it up at its next sweep instead of writing its old
    mark back; and a profile's inactive_after counts from its last session as rewound."""
    monkeypatch.setattr("edge.retention.clock.clock_synced", lambda: True)  # NTP vouches for the wall clock
    config = load_config(write_config(mode="always", child=Retention("child", "1h", "7d", inactive_after="2d")))
    wall = FakeWall()
    clock, store, shredder = retention_parts(config, wall)
    shredder.sweep()
    sessions = []
    for _ in range(4):
        sessions.append(record_in_process(store, clock, config, "child"))
        wall.advance(300)
    wall.set_wall(datetime.fromtimestamp(wall.wall, timezone.utc) - timedelta(seconds=300))  # NTP steps the wall clock back
    assert clock.read().ran_ahead
    buckets = sorted(store.read().buckets)
    stale = shredder  # its clock was read before the rewind

    other = wiring.make_clock(config, wall=lambda: wall.wall, monotonic=lambda: wall.mono, boot=lambda: "boot-1", uptime=lambda: wall.mono)
    done = rewind(store, other, shredder.audit)
    assert done is not None and done.seconds == 300 and done.buckets == len(buckets) == 5
    moved = sorted(store.read().buckets)
    assert moved != buckets and set(moved) & set(buckets)  # ids taken over from the bucket before

    report = stale.sweep()
    assert report.empty and report.reading.now == datetime.fromtimestamp(wall.wall, timezone.utc)
    assert json.loads((config.device.data_dir / "clock").read_text())["rewind"] == done.request
    data_dir = config.device.data_dir
    files = [data_dir / "recordings" / f"{s}.wav.age" for s in sessions]
    assert openable(store, files) == [True] * 4  # every key still opens its files

    wall.advance(2 * 86400 - 305)  # the child was last heard 2 days ago (as rewound: 5 minutes earlier), less 5 s
    assert not [b for b in stale.sweep().buckets if b.reason == "inactive"]
    wall.advance(10)
    assert {b.reason for b in stale.sweep().buckets} >= {"inactive"} and store.read().sessions == {}


def test_the_clock_is_never_earlier_than_the_latest_retained_session(tmp_path, write_config):
    """A lost mark must not let a clock that ran ahead (and took the expiries with it) start
    again from the wall clock: the latest session's start is a floor."""
    config = load_config(write_config(mode="always", child=CHILD))
    wall = FakeWall()
    clock, store, shredder = retention_parts(config, wall)
    wall.set_wall(START + 20 * YEAR)
    shredder.sweep()
    record_in_process(store, clock, config, "child")
    wall.set_wall(START)
    (config.device.data_dir / "clock").unlink()
    _clock, _store, fresh = retention_parts(config, wall)
    assert fresh.sweep().reading.now >= START + 20 * YEAR and store.read().sessions
    assert os.path.exists(config.device.data_dir / "clock")
