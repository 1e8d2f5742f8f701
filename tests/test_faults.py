"""The fault campaign, quick version (the long one: scripts/fault-campaign.py).

kill -9 at armed crash points, power cuts in a keystore write, a full disk, corrupt
files, and fuzzed input: nothing lost, nothing kept too long, only the project's own
errors. The counts are printed at the end of the test run (conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.audit.log import AuditLog
from edge.audit.verify import verify
from edge.config import parse_config
from edge.control.protocol import parse_request
from edge.crypto.age import Identity, decrypt, encrypt
from edge.errors import AgeError, AuditError, ControlError, EdgeError
from edge.events import SessionCreated
from edge.store.keystore import Access, Keystore

from campaign import JUMP, JUMP_MOST, RECORDING_POINTS, SHRED_POINTS, Campaign, Tally, make_clip
from support import (
    FakeWall,
    MicAgent,
    Retention,
    ServeAgent,
    edge_agent,
    libfaketime_env,
    ntp_env,
    play,
    record_in_process,
    remove_faketime_leftovers,
    retention_parts,
    traced_sql,
    wyoming_utterance,
)

TALLIES: list[tuple[str, Tally]] = []
"""What every campaign in this run did; printed by conftest's terminal summary."""


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("campaign-speech"))


# -- kill -9 at every crash point -------------------------------------------------------


@pytest.mark.timeout(1200)  # 14 trials of about 20 s each; a hung command fails its trial after campaign.HUNG
def test_kill_9_at_every_crash_point(tmp_path, clip):
    """Each crash point at least once, while recording and while shredding; after each,
    restart and purge: no plaintext, nothing overdue, the log verifies."""
    campaign = Campaign(tmp_path, clip, seed=8)
    for point in RECORDING_POINTS:
        campaign.trial(point, 1 if point != "audio.chunk" else 40, phase="record")
    for point in SHRED_POINTS:
        campaign.trial(point, 1, phase="shred")
    TALLIES.append(("kill -9 campaign (quick)", campaign.tally))
    assert campaign.tally.failures == [], "\n".join(campaign.tally.failures)
    # Every point was reached at least once: a campaign that injects nothing proves nothing.
    assert set(campaign.tally.by_point) == set(RECORDING_POINTS), campaign.tally.summary()


def test_a_monotonic_jump_moves_the_clock_no_further_than_the_wall_clock(tmp_path, clip):
    """The campaign's "monotonic jump": purges whose monotonic clock is faked decades ahead
    (as `faketime -f +10m` does), the longest first; after each, the usual checks and a
    trusted clock no further ahead than that jump's wall clock."""
    campaign = Campaign(tmp_path, clip, seed=27)
    campaign.trial(phase="record", point="session.finish", hit=1)  # a mark for the jump to start from
    for seconds in (JUMP_MOST, 30):
        campaign.jump(seconds)
    TALLIES.append(("monotonic jump campaign (quick)", campaign.tally))
    assert campaign.tally.failures == [], "\n".join(campaign.tally.failures)
    assert campaign.tally.by_point[JUMP] == 2


# -- power cut in a keystore write --------------------------------------------------------


@pytest.fixture
def recorded(write_config, speech):
    """A data folder with two retained child sessions."""
    config = write_config(mode="always")
    clip = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0)
    run = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "child")
    assert run.returncode == 0, run.stderr
    return config, config.parent / "data", clip


def _status(config: Path) -> subprocess.CompletedProcess:
    return edge_agent("--config", str(config), "status", "--json")


@pytest.mark.parametrize("cut", [0, 17, 40, 500, "half", -4096])
def test_a_cut_short_keystore_fails_closed_and_loses_nothing(recorded, cut):
    config, data, clip = recorded
    keystore = data / "keystore.db"
    assert not (data / "keystore.db-wal").exists()  # at rest: one file
    whole = keystore.read_bytes()
    keystore.write_bytes(whole[: len(whole) // 2] if cut == "half" else whole[:cut])  # -4096: the last page lost
    status = _status(config)
    assert status.returncode == 1 and "cannot be opened" in status.stderr and "Traceback" not in status.stderr
    run = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "child")
    assert run.returncode == 1 and "will not record" in run.stderr
    assert '"type":"keystore.unreadable"' in (data / "audit.jsonl").read_text()
    assert len(list((data / "recordings").iterdir())) == 2  # nothing was recorded, nothing deleted
    keystore.write_bytes(whole)  # the old keystore back: everything opens as before
    assert len(json.loads(_status(config).stdout)["sessions"]) == 2


def _damage_an_index(keystore: Path) -> None:
    """Garbage over the root page of the keystore's first index (the file at rest, its WAL folded in)."""
    import sqlite3

    connection = sqlite3.connect(keystore)
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    [(root,)] = connection.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' ORDER BY name LIMIT 1").fetchall()
    connection.close()  # the last connection: the WAL is copied in and removed
    with keystore.open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xff" * 16)


def test_a_clean_stop_leaves_the_keystore_at_rest_and_only_an_unchanged_one_skips_the_page_check(recorded, monkeypatch):
    """The agent that stopped cleanly marks the keystore at rest (naming the file as it is), so
    the next start skips `PRAGMA quick_check` (0.2-1.3 s at 100,000 sessions); the marker goes
    (durably) before anything is written, and a write by any other command means the next
    agent's start checks every page again."""
    from edge import wiring
    from edge.config import load_config
    from edge.store import database

    config_path, data, _ = recorded
    config = load_config(config_path)
    marker = data / "keystore-at-rest"
    assert marker.read_bytes() == database.fingerprint(data) and oct(marker.stat().st_mode & 0o777) == "0o600"
    statements = traced_sql(monkeypatch)
    store, _ = wiring.open_store(config, Access.AGENT)
    store.read()
    assert not any("quick_check" in s for s in statements) and not marker.exists()
    store.close()
    assert marker.read_bytes() == database.fingerprint(data)
    purge = edge_agent("--config", str(config_path), "purge")  # a writer, not the agent: it leaves no marker
    assert purge.returncode == 0, purge.stderr
    assert not marker.exists()
    store, _ = wiring.open_store(config, Access.AGENT)
    store.read()
    assert sum("quick_check" in s for s in statements) == 1
    store.close()
    assert marker.exists()


@pytest.mark.parametrize("how", ["kill -9", "changed at rest"])
def test_after_an_unclean_stop_or_a_change_at_rest_the_start_checks_every_page(recorded, how):
    """kill -9 leaves no marker; a keystore changed after a clean stop no longer matches the
    one the marker names: either way the next start checks every page, finds the damaged
    index, and records nothing."""
    config, data, clip = recorded
    if how == "kill -9":
        crash = {**os.environ, "EDGE_CRASH_AT": "session.finish"}
        killed = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "child", env=crash)
        assert killed.returncode == -9 and not (data / "keystore-at-rest").exists()
    else:
        assert (data / "keystore-at-rest").exists()
    _damage_an_index(data / "keystore.db")
    run = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "child")
    assert run.returncode == 1 and "will not record" in run.stderr and "Traceback" not in run.stderr
    assert '"type":"keystore.unreadable"' in (data / "audit.jsonl").read_text()


def test_a_commit_cut_short_in_the_wal_is_whole_or_absent(recorded, tmp_path):
    """A power cut while SQLite appends a commit to the WAL, at every frame boundary and
    inside frames: the keystore then opens as before the commit or after it, never a mix."""
    from edge.config import load_config
    from edge.wiring import open_vault

    config_path, data, _ = recorded
    config = load_config(config_path)
    wall = FakeWall()
    clock, store, _ = retention_parts(config, wall)
    before = set(store.read().sessions)
    store.checkpoint()
    base = (data / "keystore.db").read_bytes()
    session = record_in_process(store, clock, config, "child")  # a begin and a finish: two commits
    wal = (data / "keystore.db-wal").read_bytes()
    frame = 24 + 4096
    cuts = sorted({32 + k * frame + d for k in range((len(wal) - 32) // frame + 1) for d in (0, 24, 2000)} | {len(wal)})
    seen = set()
    for cut in cuts:
        copy = tmp_path / f"cut-{cut}"
        shutil.copytree(data, copy, ignore=shutil.ignore_patterns("keystore.db*"))
        (copy / "keystore.db").write_bytes(base)
        (copy / "keystore.db-wal").write_bytes(wal[:cut])
        reader = Keystore(copy, open_vault(config.vault, copy), access=Access.READ).read()
        sessions = {entry.id: entry.state for entry in reader.sessions.entries()}
        assert set(sessions) in (before, before | {session}), cut
        seen.add(sessions.get(session, "absent"))
    assert seen == {"absent", "recording", "complete"}  # each commit was cut before and after


# -- full disk ------------------------------------------------------------------------------


def test_full_disk_stops_recording_cleanly_and_forget_still_works(small_disk, write_config, speech):
    config = write_config(mode="always", max_session="10m", data_dir=small_disk / "data", child=Retention("child", "1h", "1h"))
    long_speech = speech.join(*[speech.say(w, pad=0.05) for w in ["라디오", "메시지", "아버지", "위치", "보안"] * 30])
    full = edge_agent("--config", str(config), "run", "--input", str(long_speech), "--profile", "child")
    assert full.returncode == 1
    assert "recording stopped: the disk is full" in full.stderr and "Traceback" not in full.stderr
    [cut] = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)["sessions"]
    assert cut["state"] == "recording"  # what was sealed before the disk filled up is kept, and known
    forget = edge_agent("--config", str(config), "forget", "--all", "--yes")
    assert forget.returncode == 0, forget.stderr
    assert json.loads(edge_agent("--config", str(config), "status", "--json").stdout)["sessions"] == []
    assert list((small_disk / "data" / "recordings").iterdir()) == []


def test_a_due_shred_works_on_a_full_disk(small_disk, write_config, speech):
    config = write_config(mode="always", data_dir=small_disk / "data", child=Retention("child", "3s", "3s"))
    ran = edge_agent("--config", str(config), "run", "--input", str(speech.join(speech.say("메시지"), 1.0)), "--profile", "child")
    assert ran.returncode == 0, ran.stderr
    filler = small_disk / "filler"
    with filler.open("wb") as out:  # someone else fills the disk to the last byte
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    time.sleep(3.5)
    purge = edge_agent("--config", str(config), "purge")
    assert purge.returncode == 0, purge.stderr
    assert json.loads(edge_agent("--config", str(config), "status", "--json").stdout)["sessions"] == []
    assert filler.exists()  # not ours: untouched


# -- corrupt files -----------------------------------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(200))


@pytest.mark.parametrize(
    "damage, command, message",
    [
        (lambda d, c: _garbage(d / "keystore.db"), ("status",), "cannot be opened"),
        (lambda d, c: _garbage(d / "keystore.db"), ("purge",), "cannot be opened"),
        (lambda d, c: _garbage(d / "audit.key"), ("audit", "checkpoint", "--out", "{folder}/checkpoint.txt"), "audit signing key"),
        (
            lambda d, c: (d / "audit.jsonl").write_bytes((d / "audit.jsonl").read_bytes().replace(b'"seq":3', b'"seq":9', 1)),
            ("audit", "verify"),
            "line 3",
        ),
        (lambda d, c: (d / "audit.jsonl").write_bytes(b"\x00\xff" * 50 + b"\n"), ("audit", "show"), "line 1"),
        (lambda d, c: _garbage(c), ("status",), "not UTF-8"),
        (lambda d, c: c.write_text("[device\n"), ("status",), "not valid TOML"),
    ],
)
def test_corrupt_files_give_one_clear_error(recorded, damage, command, message):
    config, data, _ = recorded
    damage(data, config)
    result = edge_agent("--config", str(config), *(part.format(folder=config.parent) for part in command))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_a_corrupt_recording_is_reported_and_the_others_survive(recorded):
    config, data, _ = recorded
    sessions = json.loads(_status(config).stdout)["sessions"]
    first = data / "recordings" / f"{sessions[0]['session']}.wav.age"
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    first.write_bytes(bytes(raw))
    out = config.parent / "out.wav"
    bad = edge_agent("--config", str(config), "export", "--session", sessions[0]["session"], "--out", str(out), "--purpose", "playback")
    assert bad.returncode == 1 and "damaged" in bad.stderr and not out.exists()
    good = edge_agent("--config", str(config), "export", "--session", sessions[1]["session"], "--out", str(out), "--purpose", "playback")
    assert good.returncode == 0, good.stderr


def test_a_corrupt_file_vault_is_refused(write_config, speech, tmp_path):
    key = tmp_path / "root.key"
    config = write_config(mode="always", vault=f'backend = "file"\npath = "{key}"')
    ran = edge_agent("--config", str(config), "run", "--input", str(speech.join(speech.say("메시지"), 1.0)), "--profile", "child")
    assert ran.returncode == 0, ran.stderr
    key.write_bytes(key.read_bytes()[:20])
    result = edge_agent("--config", str(config), "status")
    assert result.returncode == 1 and "is not a root key file" in result.stderr and "Traceback" not in result.stderr


# -- fuzzing: only the project's own errors come out ---------------------------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_SECTION_KEYS = {
    "device": ["data_dir", "model", "sample_rate", "input_device", "control_socket"],
    "vault": ["backend", "keyring", "path"],
    "trigger": ["mode", "wake_phrase", "grammar", "silence_end", "max_session", "wake_timeout", "wake_confidence", "vad_aggressiveness"],
    "household": ["active_profile", "max_child_audio", "max_child_transcript"],
    "retention": ["sweep"],
}


@st.composite
def _configs(draw):
    document = {}
    for section, keys in _SECTION_KEYS.items():
        if draw(st.booleans()):
            document[section] = {k: draw(_toml_values) for k in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True))}
    profiles = draw(
        st.dictionaries(
            st.text(max_size=8),
            st.dictionaries(
                st.sampled_from(["kind", "keep_audio", "keep_transcript", "allow_training", "inactive_after", "extra"]),
                _toml_values,
                max_size=5,
            ),
            max_size=3,
        )
    )
    if profiles or draw(st.booleans()):
        document["profiles"] = profiles
    if draw(st.booleans()):
        document[draw(st.text(max_size=6))] = draw(_toml_values)
    return document


@_FUZZ
@given(_configs())
def test_fuzz_config_parser(document):
    try:
        parse_config(document, Path("/fuzz/household.toml"))
    except EdgeError:
        pass


@_FUZZ
@given(st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_fuzz_control_messages(raw):
    try:
        parse_request(raw)
    except ControlError:
        pass


_IDENTITY = Identity.generate()
_SEALED = encrypt(b"fuzz me " * 300, _IDENTITY.recipient)


@_FUZZ
@given(st.lists(st.tuples(st.integers(0, len(_SEALED) - 1), st.integers(0, 255)), min_size=1, max_size=4), st.integers(0, len(_SEALED)))
def test_fuzz_age_reader(flips, cut):
    data = bytearray(_SEALED)
    for position, value in flips:
        data[position] = value
    try:
        decrypt(bytes(data[:cut]), [_IDENTITY])
    except AgeError:
        return
    assert bytes(data[:cut]) == _SEALED  # only the untouched, whole file opens


@pytest.fixture(scope="module")
def real_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-log")
    log = AuditLog(folder)
    for index in range(30):
        log.append(SessionCreated(f"{index:016x}", "child", "given", True, None, None, None, None))  # keeps nothing: signed
    return folder, log.path.read_bytes()


@_FUZZ
@given(st.data())
def test_fuzz_audit_log_reader(real_log, data):
    folder, original = real_log
    blob = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        choice = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, max(0, len(blob) - 1)))
        if choice == "flip" and blob:
            blob[position] ^= data.draw(st.integers(1, 255))
        elif choice == "cut":
            del blob[position : position + data.draw(st.integers(1, 400))]
        else:
            blob[position:position] = data.draw(st.binary(min_size=1, max_size=40))
    log = AuditLog(folder)
    log.path.write_bytes(bytes(blob))
    try:
        result = verify(log, None, datetime.now(timezone.utc), timedelta(seconds=1))
    finally:
        log.path.write_bytes(original)
    changed = bytes(blob) != original
    # Whole lines cut off the end, the last newline with them or not: undetectable without a
    # witness (a whole last entry that only lacks its newline is kept, by design).
    clean_cut = original.startswith(bytes(blob)) and (blob.endswith(b"\n") or original[len(blob) : len(blob) + 1] == b"\n")
    if changed and not clean_cut:
        assert not result.ok


# -- the clock stepped under a running agent ---------------------------------------------


def _sessions(config: Path, env: dict) -> list[dict]:
    status = edge_agent("--config", str(config), "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)["sessions"]


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.25)
    pytest.fail(f"not within {seconds:.0f}s: {what}")


@pytest.mark.mic
def test_clock_steps_under_a_running_agent(virtual_mic, speech, write_config, tmp_path):
    """The wall clock of a recording agent is set back a year, then forward to 2038.

    Set back: the child's 20 s audio is still shredded on time (by the monotonic clock),
    and the step is audited. Forward: data only dies earlier, so the 7-day transcript
    goes at once. No crash, nothing comes back, the log verifies."""
    config = write_config(mode="always", child=Retention("child", "20s", "7d"))
    config.write_text(
        config.read_text(encoding="utf-8") + '\n[retention]\nsweep = "1h"\n', encoding="utf-8"
    )  # only bucket jobs and the watch
    clock = tmp_path / "wall-offset"

    def step_wall_clock(offset: str) -> None:  # atomically: libfaketime rereads it at every call
        (tmp_path / "offset.new").write_text(offset + "\n")
        os.replace(tmp_path / "offset.new", clock)

    step_wall_clock("+0")
    env = ntp_env(False, {**virtual_mic, **libfaketime_env(FAKETIME_TIMESTAMP_FILE=str(clock), FAKETIME_NO_CACHE="1")})  # by hand
    agent = MicAgent(env, config, "--profile", "child")
    try:
        play(virtual_mic, speech.say("메시지"))
        [session] = _wait_for(lambda: _sessions(config, virtual_mic), 15, "the spoken session is kept")
        audio_due = datetime.fromisoformat(session["audio_expires"])
        assert timedelta(seconds=5) < audio_due - datetime.now(timezone.utc) <= timedelta(seconds=20)

        step_wall_clock("-1y")  # the wall clock is set back a year
        looked = datetime.now(timezone.utc)  # when the last poll that still found the audio began
        while True:
            began = datetime.now(timezone.utc)
            if [s for s in _sessions(config, virtual_mic) if s["audio_expires"] is None]:
                break
            looked = began
            assert began - audio_due < timedelta(seconds=25), "audio not shredded"
            time.sleep(0.25)
        seen = datetime.now(timezone.utc)  # each poll is a process: seconds apiece on a loaded CI
        entries = AuditLog(config.parent / "data").entries()
        [shred] = [
            e["fields"]
            for e in entries
            if e["type"] == "shred" and e["fields"]["kind"] == "audio" and session["session"] in e["fields"]["sessions"]
        ]
        late = timedelta(seconds=shred["late_seconds"])  # the agent's own trusted clock, held to the polls:
        assert looked - audio_due - timedelta(seconds=1) < late < seen - audio_due + timedelta(seconds=1), (late, looked, seen)
        assert late < timedelta(seconds=4), f"audio shredded {late} after its expiry"

        def set_back() -> list[dict]:  # logged after the shred's commit, with the rest of that sweep
            try:
                return [e["fields"] for e in AuditLog(config.parent / "data").entries() if e["type"] == "clock.set_back"]
            except AuditError:  # read while a line was half written: look again
                return []

        assert _wait_for(set_back, 10, "the step audited")[0]["seconds"] > 364 * 86400

        step_wall_clock("+12y")  # and forward, past 2038: the transcript (7 days) is due at once
        stepped = time.monotonic()
        _wait_for(lambda: not _sessions(config, virtual_mic), 10, "transcript shredded after the forward step")
        # at once: the watch's next tick and a sweep (1.5-1.8 s on a quiet machine; 6 s once in a
        # loaded CI run, where each status poll takes seconds), not the hourly sweep
        assert time.monotonic() - stepped < 10
    finally:
        sessions, stderr, code = agent.stop()
        remove_faketime_leftovers(agent.process.pid)
    assert code == 0 and "Traceback" not in stderr, stderr
    assert [s["text"] for s in sessions] == ["메시지"]
    assert _sessions(config, virtual_mic) == []  # back at the real time: nothing resurrected
    verified = edge_agent("--config", str(config), "audit", "verify", env=virtual_mic)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# -- descriptor starvation: clients on the LAN against the shredder ----------------------------


def _flood_without_reading(path: Path) -> socket.socket:
    """A Wyoming client that asks for `describe` until the sockets are full and never reads."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(path))
    client.setblocking(False)
    try:
        while True:
            client.send(b'{"type": "describe"}\n' * 64)
    except (BlockingIOError, ConnectionError):
        return client


def _descriptors_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_descriptor_starvation_by_wyoming_clients_never_delays_a_shred(write_config, speech, tmp_path):
    """Waves of clients that never read, against `serve` allowed 160 files: a child's recording
    that falls due under the attack is shredded on time, the agent never runs out of
    descriptors, its log says so once rather than in a loop, and it serves again afterwards."""
    config = write_config(mode="always", child=Retention("child", "22s", "22s"), sweep="1s")
    kids, hall = tmp_path / "kids.sock", tmp_path / "hall.sock"
    listeners = f'\n[[wyoming]]\nuri = "unix://{kids}"\nprofile = "child"\n\n[[wyoming]]\nuri = "unix://{hall}"\n'
    config.write_text(config.read_text(encoding="utf-8") + listeners, encoding="utf-8")
    limit = 160
    agent = ServeAgent(config, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
    clip, attackers, most = speech.say("메시지"), [], 0
    try:
        assert asyncio.run(wyoming_utterance(f"unix://{kids}", clip)).data["text"] == "메시지"
        [session] = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)["sessions"]
        for _wave in range(3):  # each outlives the idle timeout (10 s) and the close grace (2 s)
            began = time.monotonic()
            attackers += [_flood_without_reading(path) for _ in range(100) for path in (kids, hall)]
            while time.monotonic() - began < 13:
                most = max(most, _descriptors_of(agent.process.pid))
                time.sleep(0.5)
        shreds = [e["fields"] for e in AuditLog(config.parent / "data").entries() if e["type"] == "shred"]
        status = edge_agent("--config", str(config), "status", "--json")  # through the agent's control socket
    finally:
        for attacker in attackers:
            attacker.close()
    try:
        after = asyncio.run(wyoming_utterance(f"unix://{hall}", clip))
    finally:
        _out, stderr, code = agent.stop()
    assert most < limit - 32, f"the agent held {most} of its {limit} descriptors"
    mine = [s for s in shreds if session["session"] in s["sessions"]]
    assert {s["kind"] for s in mine} == {"audio", "transcript"}, shreds  # fell due 22 s in, under the attack
    assert all(s["late_seconds"] < 3 for s in mine), mine
    assert status.returncode == 0 and json.loads(status.stdout)["agent"]["pid"] == agent.process.pid  # its control socket answered
    assert after.data["text"] == "메시지"
    assert code == 0 and "Traceback" not in stderr and "Too many open files" not in stderr, stderr[-2000:]
    assert len(stderr.splitlines()) < 40, stderr[-2000:]  # turned-away clients said once per burst
