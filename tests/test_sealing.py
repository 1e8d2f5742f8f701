"""Sealed recordings end to end: what profiles keep is sealed as it is heard, only
sealed, opened by `age` with the exported identity, and exported only for allowed purposes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge import wiring
from edge.audio.wavfile import open_wav
from edge.audit.log import AuditLog
from edge.config import load_config
from edge.disk.layout import recording_path, transcript_path
from edge.errors import AgeError, PolicyError, UsageError
from edge.store.export import export_audio
from edge.store.keystore import Keystore
from edge.values import Purpose

from support import PHRASES, ROOT, MicAgent, edge_agent, pcm_of, run_sealed
from support import plaintext_files as plaintext_found

GUEST = '\n[profiles.guest]\nkind = "adult"\nkeep_audio = "0s"\nkeep_transcript = "0s"\n'
CONSENTING = '\n[profiles.donor]\nkind = "adult"\nkeep_audio = "24h"\nkeep_transcript = "1d"\nallow_training = true\n'


def keystore_for(config) -> Keystore:
    return wiring.open_store(config)[0]


@pytest.fixture
def two_phrases(speech):
    return speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0)


def test_kept_sessions_are_sealed_files_only(load, model, two_phrases):
    config = load(mode="always")
    records, store = run_sealed(config, model, two_phrases, "child")
    assert [r.text for r in records] == ["메시지", "아버지"]
    data_dir = config.device.data_dir
    for record in records:
        for path in (recording_path(data_dir, record.session), transcript_path(data_dir, record.session)):
            assert path.read_bytes().startswith(b"age-encryption.org/v1\n")
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert record.audio_expires and record.transcript_expires
    for folder in [data_dir, *[p for p in data_dir.rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert plaintext_found(data_dir, pcm_of(two_phrases), ["메시지", "아버지"]) == []
    sessions = store.read().sessions
    assert {s.state for s in sessions.values()} == {"complete"}
    # Both sessions share one audio bucket and one transcript bucket (same profile, same window).
    assert len({s.audio_bucket for s in sessions.values()}) == 1
    assert len(store.read().buckets) == 2


def test_the_scan_can_fail(load, model, two_phrases, tmp_path):
    """Positive control: the exported plaintext WAV is found by the same scan."""
    config = load(mode="always")
    records, store = run_sealed(config, model, two_phrases, "child")
    exported = tmp_path / "exported.wav"
    export_audio(
        store, AuditLog(config.device.data_dir), config, records[0].session, exported, Purpose.PLAYBACK, datetime.now(timezone.utc)
    )
    out = config.device.data_dir / "leak.wav"  # edge refuses to export into its data folder: put it there by hand
    out.write_bytes(exported.read_bytes())
    assert plaintext_found(config.device.data_dir, pcm_of(two_phrases), []) == [str(out)]


def test_keep_nothing_writes_nothing(write_config, model, two_phrases):
    path = write_config(mode="always")
    path.write_text(path.read_text(encoding="utf-8") + GUEST, encoding="utf-8")
    config = load_config(path)
    records, store = run_sealed(config, model, two_phrases, "guest")
    assert len(records) == 2 and all(r.audio_expires is None and r.transcript_expires is None for r in records)
    assert store.read().sessions == {}
    assert not (config.device.data_dir / "recordings").exists()
    assert not (config.device.data_dir / "transcripts").exists()


def test_export_is_the_exact_audio_of_the_session(load, model, two_phrases, tmp_path):
    config = load(mode="always")
    records, store = run_sealed(config, model, two_phrases, "child")
    out = tmp_path / "out.wav"
    exported = export_audio(
        store, AuditLog(config.device.data_dir), config, records[1].session, out, Purpose.REVIEW, datetime.now(timezone.utc)
    )
    info = open_wav(out)
    assert (info.rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    session_pcm = out.read_bytes()[44:]
    source = pcm_of(two_phrases)
    start = int(records[1].start * 16000) * 2
    assert session_pcm == source[start : start + len(session_pcm)]  # bit-exact slice of what was heard
    assert exported.seconds == pytest.approx(records[1].end - records[1].start, abs=0.05)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_training_is_refused_for_children_and_non_consenting_adults(load, model, two_phrases, tmp_path):
    config = load(mode="always")
    child, store = run_sealed(config, model, two_phrases, "child")
    parent, _ = run_sealed(config, model, two_phrases, "parent")
    now = datetime.now(timezone.utc)
    with pytest.raises(PolicyError, match="child profile"):
        export_audio(store, AuditLog(config.device.data_dir), config, child[0].session, tmp_path / "a.wav", Purpose.TRAINING, now)
    with pytest.raises(PolicyError, match="has not consented"):
        export_audio(store, AuditLog(config.device.data_dir), config, parent[0].session, tmp_path / "b.wav", Purpose.TRAINING, now)
    assert not (tmp_path / "a.wav").exists() and not (tmp_path / "b.wav").exists()


def test_training_allowed_only_with_consent(write_config, model, two_phrases, tmp_path):
    path = write_config(mode="always")
    path.write_text(path.read_text(encoding="utf-8") + CONSENTING, encoding="utf-8")
    config = load_config(path)
    records, store = run_sealed(config, model, two_phrases, "donor")
    export_audio(
        store,
        AuditLog(config.device.data_dir),
        config,
        records[0].session,
        tmp_path / "ok.wav",
        Purpose.TRAINING,
        datetime.now(timezone.utc),
    )
    assert open_wav(tmp_path / "ok.wav").frames > 0


def test_unknown_expired_and_damaged_sessions_are_clear_errors(load, model, two_phrases, tmp_path):
    config = load(mode="always")
    records, store = run_sealed(config, model, two_phrases, "child")
    now = datetime.now(timezone.utc)
    with pytest.raises(UsageError, match="no retained session 'nope'"):
        export_audio(store, AuditLog(config.device.data_dir), config, "nope", tmp_path / "x.wav", Purpose.PLAYBACK, now)
    with pytest.raises(PolicyError, match="expired"):
        export_audio(
            store,
            AuditLog(config.device.data_dir),
            config,
            records[0].session,
            tmp_path / "x.wav",
            Purpose.PLAYBACK,
            now + timedelta(hours=2),
        )
    sealed = recording_path(config.device.data_dir, records[0].session)
    blob = bytearray(sealed.read_bytes())
    blob[-100] ^= 1
    sealed.write_bytes(bytes(blob))
    with pytest.raises(AgeError, match="damaged or incomplete"):
        export_audio(store, AuditLog(config.device.data_dir), config, records[0].session, tmp_path / "x.wav", Purpose.PLAYBACK, now)
    assert list(tmp_path.glob("*x.wav*")) == []  # no partial output left behind


def test_cli_status_export_and_age_interop(write_config, speech, two_phrases, tmp_path):
    config = write_config(mode="always")
    run = edge_agent("--config", str(config), "run", "--input", str(two_phrases), "--profile", "child", "--json")
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert all(line["audio_expires"] and line["transcript_expires"] for line in lines)
    status = edge_agent("--config", str(config), "status", "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["vault"]["backend"] == "keyring" and document["vault"]["level"] == "crypto-erase"
    assert [s["session"] for s in document["sessions"]] == [line["session"] for line in lines]
    assert document["sessions"][0]["audio_expires"] == lines[0]["audio_expires"]

    session = lines[0]["session"]
    out = tmp_path / "playback.wav"
    exported = edge_agent("--config", str(config), "export", "--session", session, "--out", str(out), "--purpose", "playback")
    assert exported.returncode == 0, exported.stderr
    played = out.read_bytes()
    out.write_bytes(b"a file of the user's")
    again = ["--config", str(config), "export", "--session", session, "--out", str(out), "--purpose", "playback"]
    kept = edge_agent(*again)
    assert kept.returncode == 2 and "--force" in kept.stderr and out.read_bytes() == b"a file of the user's"
    replaced = edge_agent(*again, "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert out.read_bytes() == played
    identity = tmp_path / "bucket.key"
    key = edge_agent("--config", str(config), "export", "--session", session, "--identity-out", str(identity))
    assert key.returncode == 0 and "opens every recording in bucket" in key.stderr
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    sealed = recording_path(tmp_path / "data", session)
    opened = subprocess.run(["age", "-d", "-i", str(identity), str(sealed)], capture_output=True, check=True).stdout
    assert opened[44:] == out.read_bytes()[44:]  # same audio; age's copy is a streaming WAV
    assert open_wav(_write(tmp_path / "age.wav", opened)).frames == open_wav(out).frames

    refused = edge_agent("--config", str(config), "export", "--session", session, "--out", str(tmp_path / "t.wav"), "--purpose", "training")
    assert refused.returncode == 1 and "child profile" in refused.stderr and "Traceback" not in refused.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_concurrent_writers_lose_nothing(write_config, speech, two_phrases):
    """Two agents on one data folder take turns on the keystore (the data-folder lock)."""
    config = write_config(mode="always")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(config), "run", "--input", str(two_phrases), "--profile", "child", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(3)
    ]
    sessions = set()
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        sessions |= {json.loads(line)["session"] for line in out.splitlines()}
    status = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)
    assert {s["session"] for s in status["sessions"]} == sessions and len(sessions) == 6


@pytest.mark.mic
@pytest.mark.parametrize("kill_after", [1.0, 2.2, 3.4])
def test_kill_9_mid_session_leaves_no_plaintext(virtual_mic, speech, write_config, kill_after):
    words = [speech.say(p, pad=0.05) for p in PHRASES] * 2
    clip = speech.join(*words)
    config = write_config(mode="always", max_session="1m")
    agent = MicAgent(virtual_mic, config, "--profile", "child")
    player = subprocess.Popen(["paplay", str(clip)], env=virtual_mic)
    time.sleep(kill_after)
    agent.process.send_signal(signal.SIGKILL)
    agent.process.communicate(timeout=30)
    player.wait(timeout=60)
    data_dir = config.parent / "data"
    assert plaintext_found(data_dir, pcm_of(clip), PHRASES) == []
    status = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)
    states = [s["state"] for s in status["sessions"]]
    assert states == ["recording"]  # the session that was cut is known, and will expire on time
    session = status["sessions"][0]["session"]
    assert recording_path(data_dir, session).stat().st_size > 0
    result = edge_agent(
        "--config", str(config), "export", "--session", session, "--out", str(config.parent / "x.wav"), "--purpose", "playback"
    )
    assert result.returncode == 1 and "damaged or incomplete" in result.stderr


def test_a_partial_left_by_a_killed_export_is_removed_by_the_next(load, model, two_phrases, tmp_path):
    config = load(mode="always")
    records, store = run_sealed(config, model, two_phrases, "parent")
    out = tmp_path / "x.wav"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".x.wav.{dead.pid}.partial"  # what a kill -9 mid-export leaves
    leftover.write_bytes(b"RIFF plaintext")
    alive = tmp_path / f".x.wav.{os.getpid()}.partial"  # another export still running: not touched
    alive.write_bytes(b"busy")
    result = edge_agent("--config", str(config.path), "export", "--session", records[0].session, "--out", str(out), "--purpose", "playback")
    assert result.returncode == 0, result.stderr
    assert out.exists() and not leftover.exists() and alive.exists()
