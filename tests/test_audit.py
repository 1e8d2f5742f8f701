"""The audit log: tampering of every kind is caught and named, checkpoints verify with
openssl, the data is cross-checked, the log holds nothing private, the report renders."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.audit import chain, parallel
from edge.audit.log import AuditLog, Checkpoint, canonical, entry_hash
from edge.audit.verify import Parallel, verify
from edge.errors import AuditError
from edge.events import (
    AgentStopped,
    AuditEvent,
    Cleanup,
    ConfigLoaded,
    Export,
    ExportRefused,
    ForgetFulfilled,
    ForgetRequested,
    ProfileActive,
    SessionCreated,
    SessionSealed,
    Shred,
)
from edge.values import DataKind

from support import ROOT, Retention, deleted_and_rechained, edge_agent, faketime, pcm_of, png_pixels, record
from support import plaintext_files as plaintext_found

GRACE = timedelta(seconds=62)
LOADED = ConfigLoaded(path="/etc/edge/household.toml", sha256="0" * 64)


def created(session: str, child: bool = True, audio_expires: str | None = "2099-11-28T21:00:00+00:00") -> SessionCreated:
    """A session.created as the recorder writes it for a session that keeps its audio."""
    audio_bucket = None if audio_expires is None else "child.audio.x"
    return SessionCreated(session, "child", "active", child, audio_expires, None, audio_bucket, None)


def shred(sessions: list[str], late_seconds: float = 0.0) -> Shred:
    return Shred("child.audio.x", DataKind.AUDIO, "child", "expired", sessions, "2099-11-28T21:00:00+00:00", late_seconds, True, 0.0)


@pytest.fixture
def household(write_config, speech):
    """A data folder with a real history: sessions, a purge two hours later, a forget."""
    config = write_config(mode="always")
    clip = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0)
    ran = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "child", "--json")
    assert ran.returncode == 0, ran.stderr
    sessions = [json.loads(line)["session"] for line in ran.stdout.splitlines()]
    return config, config.parent / "data", sessions, clip


def check(data_dir: Path, witness: Checkpoint | None = None):
    return verify(AuditLog(data_dir), None, _now(), GRACE, witness)


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def first_bad_line(result) -> int | None:
    return result.problems[0].line if result.problems else None


def test_real_log_verifies(household):
    config, data_dir, sessions, _ = household
    result = edge_agent("--config", str(config), "audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit log intact" in result.stdout and "live: 2 session(s)" in result.stdout
    types = [e["type"] for e in AuditLog(data_dir).entries()]
    assert types[:4] == ["log.created", "policy.adopted", "config.loaded", "agent.started"]
    assert types.count("session.created") == 2 and types[-2:] == ["agent.stopped", "checkpoint"]


def test_every_bit_flip_is_caught_at_its_line(household):
    _, data_dir, _, _ = household
    log = data_dir / "audit.jsonl"
    original = log.read_bytes()
    for index in range(len(original)):
        damaged = bytearray(original)
        damaged[index] ^= 0x01
        log.write_bytes(bytes(damaged))
        result = check(data_dir)
        assert not result.ok, f"flip at byte {index} went unnoticed"
        assert first_bad_line(result) == original[:index].count(b"\n") + 1, (index, str(result.problems[0]))
    log.write_bytes(original)
    assert check(data_dir).ok


@pytest.mark.parametrize(
    "edit,expected_line",
    [
        ("delete line 4", 4),
        ("duplicate line 4", 5),
        ("swap lines 4 and 5", 4),
        ("insert a blank line after 3", 4),
        ("cut the last line in half", -1),
    ],
)
def test_line_edits_are_named(household, edit, expected_line):
    _, data_dir, _, _ = household
    log = data_dir / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    if edit == "delete line 4":
        del lines[3]
    elif edit == "duplicate line 4":
        lines.insert(4, lines[3])
    elif edit == "swap lines 4 and 5":
        lines[3], lines[4] = lines[4], lines[3]
    elif edit == "insert a blank line after 3":
        lines.insert(3, b"\n")
    else:
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
        expected_line = len(lines)
    log.write_bytes(b"".join(lines))
    result = check(data_dir)
    assert first_bad_line(result) == expected_line, str(result.problems[0]) if result.problems else "passed"


def test_tail_truncation_needs_a_witness(household, tmp_path):
    """A cut just after a checkpoint leaves a valid, signed, shorter log: only a witness shows
    it. A cut anywhere else leaves lines no checkpoint signs, with no writer left to sign them."""
    config, data_dir, _, _ = household
    witness = tmp_path / "witness.txt"
    assert edge_agent("--config", str(config), "audit", "checkpoint", "--out", str(witness)).returncode == 0
    log = data_dir / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    stopped = next(i for i, raw in enumerate(lines) if json.loads(raw)["type"] == "agent.stopped")
    assert json.loads(lines[stopped - 1])["type"] == "checkpoint"  # the last session's end
    log.write_bytes(b"".join(lines[:stopped]))  # a clean cut: the stop and everything after it
    assert edge_agent("--config", str(config), "audit", "verify").returncode == 0
    result = edge_agent("--config", str(config), "audit", "verify", "--witness", str(witness))
    assert result.returncode == 1 and "witness" in result.stdout and "truncated" in result.stdout
    log.write_bytes(b"".join(lines[: stopped - 1]))  # the session's signature cut off too
    result = edge_agent("--config", str(config), "audit", "verify")
    assert result.returncode == 1 and f"line {stopped - 2}: the last 2 line(s)" in result.stdout, result.stdout  # the session


# -- the tail: signed at the end of every session and command ------------------------------------


@pytest.mark.parametrize("deleted", ["export", "export.refused"])
def test_an_export_or_refusal_deleted_and_the_log_rechained_without_the_key_is_caught(household, tmp_path, deleted):
    """Three commands after the agent stopped: an export, a refused one, another export. The
    attacker deletes the first or the second and re-chains the log without the key."""
    config, data_dir, sessions, _ = household
    exports = [
        (sessions[0], "playback", 0),
        (sessions[0], "training", 1),  # a child's session: refused, and logged as such
        (sessions[1], "playback", 0),
    ]
    for number, (session, purpose, code) in enumerate(exports):
        out = tmp_path / f"{number}.wav"
        ran = edge_agent("--config", str(config), "export", "--session", session, "--out", str(out), "--purpose", purpose)
        assert ran.returncode == code, ran.stderr
    entries = list(AuditLog(data_dir).entries())
    assert check(data_dir).ok
    log = data_dir / "audit.jsonl"
    lines = log.read_bytes().splitlines()
    index = next(i for i, e in enumerate(entries) if e["type"] == deleted)
    log.write_bytes(b"\n".join(deleted_and_rechained(lines, index)) + b"\n")
    result = edge_agent("--config", str(config), "audit", "verify")
    assert result.returncode == 1, result.stdout
    assert f"line {index + 1}: the last " in result.stdout and "no running edge process will sign them" in result.stdout
    # every command ended signed: only the attack left lines no checkpoint follows
    assert [e["type"] for e in entries[-6:]] == ["export", "checkpoint", "export.refused", "checkpoint", "export", "checkpoint"]


def test_a_writer_killed_before_it_signed_is_named_then_signed_late_by_the_next_command(write_config, speech):
    """kill -9 mid-session: its lines stay unsigned. verify says so (it cannot tell this from
    an attack); the next command that writes signs them and logs that it found them unsigned."""
    config = write_config(mode="always")
    clip = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"))
    killed = edge_agent(
        "--config", str(config), "run", "--input", str(clip), "--profile", "child", env={"EDGE_CRASH_AT": "session.finish:2"}
    )
    assert killed.returncode == -9, killed.stderr
    data_dir = config.parent / "data"
    result = edge_agent("--config", str(config), "audit", "verify", "--json")
    document = json.loads(result.stdout)
    assert result.returncode == 1 and not document["ok"], result.stdout
    types = [e["type"] for e in AuditLog(data_dir).entries()]
    last_checkpoint = max(i for i, t in enumerate(types, 1) if t == "checkpoint")
    assert types[last_checkpoint:] == ["session.created"]  # the first session signed at its end, the second never ended
    [problem] = document["problems"]
    assert problem["line"] == last_checkpoint + 1 and "no running edge process will sign them" in problem["message"]
    assert "killed before it could sign them" in problem["message"] and document["unsigned"] == 0

    assert edge_agent("--config", str(config), "purge").returncode == 0
    entries = list(AuditLog(data_dir).entries())
    [note] = [e for e in entries if e["type"] == "log.unsigned"]
    assert note["fields"] == {"first": last_checkpoint + 1, "lines": 1} and note["seq"] == last_checkpoint + 2
    assert entries[note["seq"]]["type"] == "checkpoint"  # signed in the same write
    result = edge_agent("--config", str(config), "audit", "verify")
    assert result.returncode == 0, result.stdout
    assert "signed late: 1 line(s) were left unsigned by a writer that was killed" in result.stdout


def test_a_tail_still_being_written_is_reported_not_failed(write_config):
    """A writer holds its unsigned lines until it signs them: verify (another process) reports
    them in progress; another writer meanwhile does not take them for a dead writer's."""
    config = write_config()
    writer = AuditLog(config.parent / "data")  # in this process, as a running agent's
    writer.append(LOADED)  # not signed in its write
    result = edge_agent("--config", str(config), "audit", "verify", "--json")
    document = json.loads(result.stdout)
    assert result.returncode == 0 and document["ok"] and document["unsigned"] == 2, result.stdout  # log.created too
    text = edge_agent("--config", str(config), "audit", "verify").stdout
    assert "in progress: the last 2 line(s) belong to a session or command still running" in text
    assert edge_agent("--config", str(config), "purge").returncode == 0  # another writer, meanwhile
    assert "log.unsigned" not in [e["type"] for e in writer.entries()]
    writer.sign()
    # the purge was the first command under the household's policy: it adopted it, and signed
    assert [e["type"] for e in writer.entries()] == ["log.created", "config.loaded", "policy.adopted", "checkpoint"]
    writer.sign()  # nothing more to sign
    document = json.loads(edge_agent("--config", str(config), "audit", "verify", "--json").stdout)
    assert document["ok"] and document["unsigned"] == 0 and document["entries"] == 4


def test_verify_counts_a_tail_as_in_progress_when_the_log_grew_after_it_was_read(tmp_path):
    """A writer that signed and let go between verify's read and its check: not a dead writer."""
    from edge.audit.tail import still_written

    log = AuditLog(tmp_path)
    log.append(ProfileActive(profile="child"))  # signed in its write
    fd = os.open(log.path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert not still_written(fd, size)
        assert still_written(fd, size - 10)
        holder = AuditLog(tmp_path)
        holder.append(LOADED)
        assert still_written(fd, os.fstat(fd).st_size)
        holder.sign()
        assert not still_written(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def test_rewritten_chain_is_caught_by_its_checkpoints(household):
    """Someone edits an event and re-hashes every later line (without the signing key)."""
    _, data_dir, sessions, _ = household
    log = data_dir / "audit.jsonl"
    entries = [json.loads(line) for line in log.read_bytes().splitlines()]
    created = next(e for e in entries if e["type"] == "session.created")
    created["fields"]["audio_expires"] = "2099-01-01T00:00:00+00:00"  # pretend it may be kept longer
    previous = None
    for entry in entries:
        if previous is not None:
            entry["prev"] = previous
        entry["hash"] = entry_hash(entry)
        previous = entry["hash"]
    log.write_bytes(b"".join(canonical(e) + b"\n" for e in entries))
    result = check(data_dir)
    checkpoint_line = next(i for i, e in enumerate(entries, 1) if e["type"] == "checkpoint" and e["seq"] > created["seq"])
    assert first_bad_line(result) == checkpoint_line and "signature" in str(result.problems[0])


def test_openssl_verifies_a_checkpoint_and_rejects_a_forged_one(household, tmp_path):
    config, data_dir, _, _ = household
    checkpoint, pem = tmp_path / "cp.txt", tmp_path / "key.pem"
    assert edge_agent("--config", str(config), "audit", "checkpoint", "--out", str(checkpoint)).returncode == 0
    assert edge_agent("--config", str(config), "audit", "export-key", "--out", str(pem)).returncode == 0
    assert len((tmp_path / "cp.txt.sig").read_bytes()) == 64

    def openssl(message: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "openssl",
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                str(pem),
                "-rawin",
                "-in",
                str(message),
                "-sigfile",
                str(tmp_path / "cp.txt.sig"),
            ],
            capture_output=True,
            text=True,
        )

    good = openssl(checkpoint)
    assert good.returncode == 0 and "Signature Verified Successfully" in good.stdout
    forged = tmp_path / "forged.txt"
    forged.write_bytes(checkpoint.read_bytes().replace(b"entries ", b"entries 1"))
    assert openssl(forged).returncode != 0
    shutil.copy(tmp_path / "cp.txt.sig", tmp_path / "forged.txt.sig")
    result = edge_agent("--config", str(config), "audit", "verify", "--witness", str(forged))
    assert result.returncode == 1 and "witness" in result.stdout


def test_old_data_folder_put_back_after_a_purge_names_the_overdue_session(household, tmp_path):
    config, data_dir, sessions, _ = household
    from edge.config import load_config
    from edge.wiring import open_vault

    settings = load_config(config)
    vault = open_vault(settings.vault, data_dir)
    old_root = vault.read("current")
    assert old_root is not None
    image = tmp_path / "image"
    shutil.copytree(data_dir, image)
    purged = faketime("+2h", "purge", config=config)
    assert purged.returncode == 0 and "shredded audio" in purged.stdout
    assert faketime("+2h", "audit", "verify", config=config).returncode == 0
    # Put the old folder back, and the old root key into the vault: as if the purge never happened.
    shutil.rmtree(data_dir)
    shutil.copytree(image, data_dir)
    vault.write("current", old_root)
    result = faketime("+2h", "audit", "verify", config=config)
    assert result.returncode == 1
    assert f"session {sessions[0]}" in result.stdout and "audio expired" in result.stdout
    assert "still opens with a key the device holds" in result.stdout


def test_unfulfilled_forget_and_training_export_of_a_child_are_caught(household):
    _, data_dir, sessions, _ = household
    log = AuditLog(data_dir)
    log.append(ForgetRequested(request="abc123", selector="everything", sessions=2))
    log.append(Export(session=sessions[0], purpose="training", seconds=1.0))
    result = check(data_dir)
    messages = [str(p) for p in result.problems]
    assert any("forget request abc123 was never fulfilled" in m for m in messages)
    assert any("child's session" in m and "training" in m for m in messages)


def test_log_holds_no_audio_no_words_no_keys(household):
    config, data_dir, sessions, clip = household
    assert edge_agent("--config", str(config), "forget", "--session", sessions[0], "--yes").returncode == 0
    log = data_dir / "audit.jsonl"
    assert plaintext_found(log.parent, pcm_of(clip), ["메시지", "아버지"]) == []
    text = log.read_text()
    assert "AGE-SECRET-KEY" not in text and "\\uba54" not in text  # no identities, no escaped Hangul
    from edge.config import load_config
    from edge.store.keystore import Keystore
    from edge.wiring import open_vault

    settings = load_config(config)
    vault = open_vault(settings.vault, data_dir)
    store = Keystore(data_dir, vault)
    root = vault.read("current")
    assert root is not None
    secrets = [root.hex()] + [i.secret.hex() for b in store.read().buckets.values() for i in store.identities(b)]
    assert secrets and not any(secret in text for secret in secrets)
    assert (data_dir / "audit.key").read_bytes().hex() not in text

    @dataclass(frozen=True)
    class Leaky(ConfigLoaded):  # an event a careless change gave a field named "text"
        text: str = "hello"

    with pytest.raises(AuditError, match="field 'text' could carry private data"):
        AuditLog(data_dir).append(Leaky(path="/etc/edge/household.toml", sha256="0" * 64))


def test_verify_json_and_show(household):
    config, _, _, _ = household
    result = edge_agent("--config", str(config), "audit", "verify", "--json")
    document = json.loads(result.stdout)
    assert result.returncode == 0 and document["ok"] and document["entries"] > 5
    shown = edge_agent("--config", str(config), "audit", "show", "--type", "session.created", "--json")
    assert [json.loads(line)["type"] for line in shown.stdout.splitlines()] == ["session.created"] * 2


def _chromium(page: Path, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing: run scripts/setup.sh test")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", f"--user-data-dir={folder / 'profile'}"]
    return subprocess.run([chromium, *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=120, check=True)


def test_the_parents_report_says_what_happened_in_plain_words_in_a_real_browser(write_config, speech, tmp_path):
    """A history with both profiles, an export and a refused one, a forget, a late shred and a
    voice: the page (rendered by headless Chromium) has a section and a label for each."""
    config = write_config(mode="always", parent=Retention("adult", "24h", "30d"))
    clip = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0)
    sessions = {}
    for profile in ("parent", "child"):
        ran = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", profile, "--json")
        assert ran.returncode == 0, ran.stderr
        sessions[profile] = [json.loads(line)["session"] for line in ran.stdout.splitlines()]
    out = tmp_path / "out.wav"
    assert (
        edge_agent(
            "--config", str(config), "export", "--session", sessions["parent"][0], "--out", str(out), "--purpose", "playback"
        ).returncode
        == 0
    )
    refused = edge_agent(
        "--config", str(config), "export", "--session", sessions["child"][0], "--out", str(tmp_path / "t.wav"), "--purpose", "training"
    )
    assert refused.returncode == 1
    assert edge_agent("--config", str(config), "forget", "--session", sessions["parent"][1], "--yes").returncode == 0
    enrolled = edge_agent(
        "--config",
        str(config),
        "voices",
        "enroll",
        "child",
        "--consent",
        "--input",
        str(speech.say("아버지에게 메시지를 보내 주세요")),
        str(speech.say("라디오를 켜 주세요")),
        str(speech.say("오늘 날씨를 알려 주세요")),
    )
    assert enrolled.returncode == 0, enrolled.stderr
    assert faketime("+3h", "purge", config=config).returncode == 0  # the child's audio (1 hour) is shredded 2 hours late
    page = tmp_path / "report.html"
    result = edge_agent("--config", str(config), "audit", "report", "--html", str(page), env={"TZ": "Asia/Seoul"})
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    for outside in ("http://", "https://", "<script", "<link", "<img", "@import", "url("):
        assert outside not in text
    dom = _chromium(page, tmp_path, "--dump-dom").stdout  # what the browser built from the file
    for heading in (
        "What this device promises",
        "What each person",
        "Timeline",
        "Who looked at kept recordings",
        "Refused exports",
        "Deletions",
        "Forget requests",
        "Voices",
        "Clock and key",
    ):
        assert f"<h2>{heading}" in dom, heading
    assert "KST (UTC+0900)" in dom and "The audit log is intact" in dom
    assert "gone for good" in dom  # the keyring vault's promise, in one sentence
    assert "recording exported for playback" in dom and "a child's recording is never used for training" in dom
    assert "asked to forget session" in dom and "voice enrolled from" in dom and "with a parent's consent" in dom
    assert "2 hours" in dom and "late: edge was not running from" in dom  # lateness in words, with its reason
    assert dom.count('<tspan font-weight="bold">child</tspan>') == 2 and dom.count('<tspan font-weight="bold">parent</tspan>') == 2
    assert "1 hour" in dom and "30 days" in dom and "1 day" in dom  # the retentions, as a person says them
    shot = tmp_path / "report.png"
    _chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1000,2200")
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 40_000  # a rendered page, not a blank one
    keep = os.environ.get("EDGE_KEEP_REPORT_PNG")
    if keep:
        shutil.copy(shot, keep)


def _rows(dom: str, containing: str) -> list[list[str]]:
    """The cells of every table row of the browser's DOM that holds `containing`."""
    rows = [row.split("</tr>")[0] for row in dom.split("<tr>")[1:]]
    return [cells for row in rows if containing in row and (cells := re.findall(r"<td[^>]*>(.*?)</td>", row))]


def _minute(wall: str | datetime, zone: timezone | ZoneInfo = timezone.utc) -> str:
    """An audit entry's time as the report shows it, run with TZ=UTC (or `zone`)."""
    instant = datetime.fromisoformat(wall) if isinstance(wall, str) else wall
    return instant.astimezone(zone).strftime("%a %d %b %Y %H:%M")


def test_a_flood_of_refusals_is_one_counted_row_and_hides_no_export(write_config, speech, tmp_path):
    """A child's recording exported for review, then 200 refused training exports two hours
    apart: the page keeps the review export and counts the refusals in one row with the
    first and last time."""
    config = write_config(mode="always")
    data_dir = config.parent / "data"
    review, other = record(config, speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0), "child")
    exported = edge_agent("--config", str(config), "export", "--session", review, "--out", str(tmp_path / "r.wav"), "--purpose", "review")
    assert exported.returncode == 0, exported.stderr
    training = ("export", "--session", other, "--out", str(tmp_path / "t.wav"), "--purpose", "training")
    assert edge_agent("--config", str(config), *training).returncode == 1
    log = AuditLog(data_dir)
    first = [e for e in log.entries() if e["type"] == "export.refused"]
    assert [e["fields"]["reason"] for e in first] == ["child"]
    log.append_many([ExportRefused.parse(first[0]["fields"])] * 198)  # the same refusal, as the CLI writes it
    assert faketime("+2h", *training, config=config).returncode == 1
    refusals = [e for e in log.entries() if e["type"] == "export.refused"]
    assert len(refusals) == 200 and _minute(refusals[0]["wall"]) != _minute(refusals[-1]["wall"])
    page = tmp_path / "report.html"
    assert edge_agent("--config", str(config), "audit", "report", "--html", str(page), env={"TZ": "UTC"}).returncode == 0
    dom = _chromium(page, tmp_path, "--dump-dom").stdout
    assert "The audit log is intact" in dom
    export = [e for e in log.entries() if e["type"] == "export"][0]
    assert _rows(dom, "recording exported for review") == [[_minute(export["wall"]), "child", "recording exported for review", ""]]
    assert _rows(dom, "refused") == [
        [
            "child",
            "export for training refused",
            "a child's recording is never used for training",
            "200",
            _minute(refusals[0]["wall"]),
            _minute(refusals[-1]["wall"]),
        ]
    ]
    assert "earlier ones are not" not in dom  # nothing was cut


def test_a_timeline_longer_than_the_page_says_how_many_sessions_it_leaves_out(write_config, speech, tmp_path):
    """More sessions than the timeline draws: it draws the latest and names how many earlier
    ones it leaves out (and how many of those are still kept), and the command that lists them."""
    from edge.audit.report import TIMELINE_SESSIONS

    config = write_config(mode="always")
    sessions = TIMELINE_SESSIONS + 3
    clip = speech.join(*[part for _ in range(sessions) for part in (speech.say("메시지"), 1.0)])
    assert len(record(config, clip, "child")) == sessions
    page = tmp_path / "report.html"
    assert edge_agent("--config", str(config), "audit", "report", "--html", str(page)).returncode == 0
    dom = _chromium(page, tmp_path, "--dump-dom").stdout
    assert "The audit log is intact" in dom
    assert dom.count('<tspan font-weight="bold">child</tspan>') == TIMELINE_SESSIONS
    assert f"The timeline draws the latest {TIMELINE_SESSIONS} of {sessions} sessions: the 3 earlier ones (3 of them still kept)" in dom
    assert "<code>edge-agent audit show --type session.created</code> lists every one" in dom
    shown = edge_agent("--config", str(config), "audit", "show", "--type", "session.created", "--type", "session.sealed", "--json")
    types = [json.loads(line)["type"] for line in shown.stdout.splitlines()]
    assert sorted(types) == ["session.created"] * sessions + ["session.sealed"] * sessions  # --type repeats


def test_a_table_cut_at_its_limit_says_how_many_rows_it_leaves_out(household, tmp_path):
    """More deletions than a table holds: the latest are shown, the page says how many earlier
    ones are not and names a command that does list every one."""
    from edge.audit.report import TABLE_ROWS

    config, data_dir, _, _ = household
    assert faketime("+3h", "purge", config=config).returncode == 0
    log = AuditLog(data_dir)
    shreds = [e["fields"] for e in log.entries() if e["type"] == "shred"]
    assert shreds
    log.append_many([Shred.parse(shreds[0])] * (TABLE_ROWS + 7 - len(shreds)))  # the same shred again, as a purge writes it
    page = tmp_path / "report.html"
    assert edge_agent("--config", str(config), "audit", "report", "--html", str(page)).returncode == 0
    dom = _chromium(page, tmp_path, "--dump-dom").stdout
    deletions = dom.split("<h2>Deletions</h2>")[1].split("</section>")[0]
    assert f"Only the latest {TABLE_ROWS} of {TABLE_ROWS + 7} rows are shown: the 7 earlier ones are not." in deletions
    assert "<code>edge-agent audit show --type shred</code> lists every one" in deletions
    assert deletions.count("<tr>") == TABLE_ROWS + 1  # and the header
    shown = edge_agent("--config", str(config), "audit", "show", "--type", "shred")
    assert len(shown.stdout.splitlines()) == TABLE_ROWS + 7


def _section(dom: str, heading: str) -> str:
    return dom.split(f"<h2>{heading}</h2>")[1].split("</section>")[0]


def _shred_on_time(config: Path, data_dir: Path, profile: str = "child") -> None:
    """A purge 30 s after the profile's recordings expire: the wall clock stepped forward
    to their expiry (as NTP steps a slow clock), so every later command sees it set back."""
    created = [e["fields"] for e in AuditLog(data_dir).entries() if e["type"] == "session.created"]
    due = min(datetime.fromisoformat(f["audio_expires"]) for f in created if f["profile"] == profile)
    purged = faketime(f"+{int((due - datetime.now(timezone.utc)).total_seconds()) + 30}", "purge", config=config)
    assert purged.returncode == 0 and "shredded audio" in purged.stdout, purged.stdout + purged.stderr
    (shred,) = [e["fields"] for e in AuditLog(data_dir).entries() if e["type"] == "shred"]
    assert shred["reason"] == "expired" and 0 <= shred["late_seconds"] < 120  # on time


def _timeline_fills(dom: str) -> list[set[str]]:
    """Per session drawn on the timeline (top down): the colours of its bars."""
    svg = _section(dom, "Timeline").split('aria-label="timeline of kept sessions">')[1]
    return [set(re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"', row)) for row in svg.split('<text x="0"')[1:]]


def test_after_a_clock_step_and_two_forgets_the_report_has_one_clock_row_and_says_whose_and_why(write_config, speech, tmp_path):
    """A child's recordings shredded on time by a purge with the clock stepped forward; then
    three purges and two forgets at the real time, each of which logs the clock behind the
    trusted one. The page (Chromium's DOM, in Seoul's time) has one counted clock row, forget
    rows that name whose data and why with the counts in "what", the --before instant in local
    time, and the shredded sessions drawn grey."""
    from edge.audit.report import COLORS, EARLY, SHREDDED
    from edge.values import DataKind

    config = write_config(mode="always")
    data_dir = config.parent / "data"
    clip = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0)
    record(config, clip, "child")
    parents = record(config, clip, "parent")
    _shred_on_time(config, data_dir)
    for _ in range(3):
        assert edge_agent("--config", str(config), "purge").returncode == 0
    assert edge_agent("--config", str(config), "forget", "--session", parents[0], "--yes").returncode == 0
    starts = [e["wall"] for e in AuditLog(data_dir).entries() if e["type"] == "agent.started"]
    before = datetime.fromisoformat(starts[1]).astimezone(timezone.utc)  # the parent's run: after the child's sessions
    assert edge_agent("--config", str(config), "forget", "--before", before.isoformat(), "--yes").returncode == 0
    entries = list(AuditLog(data_dir).entries())
    clock = [e for e in entries if e["type"].startswith("clock.")]
    assert len(clock) == 5 and len({e["type"] for e in clock}) == 1  # one per command after the step
    page = tmp_path / "report.html"
    seoul = ZoneInfo("Asia/Seoul")
    assert edge_agent("--config", str(config), "audit", "report", "--html", str(page), env={"TZ": "Asia/Seoul"}).returncode == 0
    dom = _chromium(page, tmp_path, "--dump-dom").stdout
    assert "The audit log is intact" in dom

    (row,) = _rows(_section(dom, "Clock and key"), "")
    first, last = _minute(clock[0]["wall"], seoul), _minute(clock[-1]["wall"], seoul)
    assert row[0] == (first if first == last else f'{first} <span class="meta">to</span> {last}')
    assert row[1] == "-" and row[2].endswith(" <b>(logged 5 times)</b>")

    walls = [_minute(e["wall"], seoul) for e in entries if e["type"] in ("forget.requested", "forget.fulfilled")]
    why = "a parent asked (edge-agent forget, or the control socket)"
    forgets = _section(dom, "Forget requests")
    assert _rows(forgets, "") == [
        [walls[0], "one session of parent", f"asked to forget session {parents[0]}: 1 session", why],
        [walls[1], "one session of parent", "done: nothing of 1 session opens any more", why],
        [walls[2], "child", f"asked to forget everything before {_minute(before, seoul)}: 2 sessions", why],
        [walls[3], "child", "done: nothing of 2 sessions opens any more", why],
    ]
    assert "+00:00" not in dom and before.isoformat()[:16] not in dom  # no instant in UTC among local times

    kept = {color for kind in DataKind for color in COLORS[kind]}
    assert _timeline_fills(dom) == [{SHREDDED, EARLY}, {SHREDDED, EARLY}, {SHREDDED, EARLY}, kept]
    # (the child's recordings shredded on time, their transcripts and the first parent session forgotten)


def test_a_screenshot_of_the_timeline_draws_shredded_sessions_grey_and_every_axis_label_whole(write_config, speech, tmp_path):
    """Headless Chromium's screenshot of a history where everything was shredded (a parent's
    recordings on time, their transcripts, kept for 31 days, forgotten): no bar is in a colour
    the legend calls kept, and nothing of the picture (the "30 days" label at its right edge)
    is cut off: the page drawn with the picture's overflow visible is the same, pixel for pixel."""
    from edge.audit.report import COLORS, SHREDDED
    from edge.values import DataKind

    config = write_config(mode="always", parent=Retention("adult", "1h", "31d"))
    data_dir = config.parent / "data"
    record(config, speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0), "parent")
    _shred_on_time(config, data_dir, "parent")
    assert edge_agent("--config", str(config), "forget", "--profile", "parent", "--yes").returncode == 0
    page = tmp_path / "report.html"
    assert edge_agent("--config", str(config), "audit", "report", "--html", str(page), env={"TZ": "UTC"}).returncode == 0
    text = page.read_text(encoding="utf-8")
    assert ">30 days</text>" in text  # the scale runs past 30 days: its label is the last, at the right edge

    def screenshot(html_page: Path, name: str):
        shot = tmp_path / f"{name}.png"
        _chromium(html_page, tmp_path, f"--screenshot={shot}", "--window-size=1000,1100")
        return shot, png_pixels(shot.read_bytes())[:, :, :3]

    shot, pixels = screenshot(page, "report")
    keep = os.environ.get("EDGE_KEEP_REPORT_PNG")
    if keep:
        shutil.copy(shot, keep)

    def count(color: str) -> int:
        return int((pixels == [int(color[i : i + 2], 16) for i in (1, 3, 5)]).all(axis=2).sum())

    assert count(SHREDDED) > 2 * 14 * 10  # the legend's swatch and the bars
    for kind in DataKind:
        for color in COLORS[kind]:
            assert count(color) == 14 * 10, f"{color} drawn outside its legend swatch"
    unclipped = tmp_path / "unclipped.html"
    unclipped.write_text(text.replace("</style>", "svg{overflow:visible}</style>", 1), encoding="utf-8")
    _, whole = screenshot(unclipped, "unclipped")
    differ = (whole != pixels).any(axis=2)
    columns = sorted({int(c) for c in differ.nonzero()[1]})
    assert not columns, f"cut off at the picture's edge: columns {columns[0]}-{columns[-1]} differ once overflow is visible"


def test_the_report_goes_to_stdout_for_ssh_never_to_a_terminal(household, tmp_path):
    """`--html -` writes the page, and only the page, to stdout (what `ssh speaker ... >
    report.html` needs: a file of the parent's own); lines about it go to stderr. A terminal
    as stdout is refused: nothing is written, the error says how to redirect."""
    import pty

    config, data_dir, _, _ = household
    AuditLog(data_dir).append(ForgetRequested(request="abc123", selector="everything", sessions=2))  # never fulfilled
    result = edge_agent("--config", str(config), "audit", "report", "--html", "-")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("<!doctype html>") and result.stdout.endswith("</html>")
    assert result.stderr == "edge-agent: report written to standard output (the audit log did NOT verify: see the page)\n"
    assert not (ROOT / "-").exists()
    page = tmp_path / "piped.html"
    page.write_text(result.stdout, encoding="utf-8")
    dom = _chromium(page, tmp_path, "--dump-dom").stdout
    assert "The audit log did NOT verify" in dom and "forget request abc123 was never fulfilled" in dom

    controller, terminal = pty.openpty()
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "edge", "--config", str(config), "audit", "report", "--html", "-"],
            stdout=terminal,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        os.set_blocking(controller, False)
        try:
            shown = os.read(controller, 65536)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(terminal)
        os.close(controller)
    assert refused.returncode == 2 and shown == b"" and "Traceback" not in refused.stderr
    assert "standard output, which is this terminal" in refused.stderr and "--html - > report.html" in refused.stderr


def test_forget_rows_name_whose_and_why_for_every_kind_of_request():
    """The other selectors (from the shredder's own words): a profile, everything, a voiceprint,
    and a request finished after a power cut."""
    from edge.audit.story import read_story

    def entry(kind: str, **fields) -> dict:
        return {"wall": "2026-12-01T10:00:00+00:00", "type": kind, "fields": fields}

    story = read_story(
        [
            entry("session.created", session="s1", profile="child", audio_expires=None, transcript_expires=None),
            entry("forget.requested", request="a", selector="profile child", sessions=1),
            entry("forget.fulfilled", request="a", sessions=["s1"], buckets=[], rekeyed=[]),
            entry("forget.requested", request="b", selector="everything", sessions=0),
            entry("forget.requested", request="c", selector="the voiceprint of parent", sessions=0),
            entry("forget.requested", request="c", selector="the voiceprint of parent", sessions=0, resumed=True),
            entry("forget.fulfilled", request="c", sessions=[], buckets=[], rekeyed=[]),
        ]
    )
    asked = "a parent asked (edge-agent forget, or the control socket)"
    assert [(e.profile, e.what, e.why) for e in story.forgets] == [
        ("child", "asked to forget every session of child: 1 session", asked),
        ("child", "done: nothing of 1 session opens any more", asked),
        ("everyone", "asked to forget everything: none was kept", asked),
        ("parent", "asked to forget the voiceprint of parent", "a parent asked (edge-agent voices forget)"),
        (
            "parent",
            "finished the request to forget the voiceprint of parent that a power cut or crash interrupted",
            "a parent asked (edge-agent voices forget)",
        ),
        ("parent", "done: nothing of it opens any more", "a parent asked (edge-agent voices forget)"),
    ]


def test_a_time_in_summer_time_names_its_zone(monkeypatch):
    """The header names the zone of now; a time on the other side of a daylight-saving change
    says which zone it is in."""
    import time

    from edge.audit.story import local

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        january, july = local(datetime(2026, 1, 15, 12, tzinfo=timezone.utc)), local(datetime(2026, 7, 15, 12, tzinfo=timezone.utc))
        winter = datetime.now().astimezone().utcoffset() == timedelta(hours=1)
        assert (january, july) == (
            ("Thu 15 Jan 2026 13:00", "Wed 15 Jul 2026 14:00 CEST") if winter else ("Thu 15 Jan 2026 13:00 CET", "Wed 15 Jul 2026 14:00")
        )
    finally:
        monkeypatch.undo()
        time.tzset()


def test_only_known_event_types_are_written_or_shown(household, tmp_path):

    @dataclass(frozen=True)
    class Misnamed(Cleanup):  # a class outside edge.events' registry
        event_type = "shredded"

    with pytest.raises(AuditError, match="not a type the log knows"):
        AuditLog(tmp_path).append(Misnamed(files=1))
    config, _, _, _ = household
    shown = edge_agent("--config", str(config), "audit", "show", "--type", "shredd")
    assert shown.returncode == 2 and shown.stdout == ""
    assert "did you mean 'shred'?" in shown.stderr and "voice.forgotten" in shown.stderr


def test_checkpoint_every_hundred_events(tmp_path):
    log = AuditLog(tmp_path)
    for index in range(120):
        log.append(ConfigLoaded(path=f"/etc/edge/{index}.toml", sha256="0" * 64))  # not signed in its write
    checkpoints = [e for e in log.entries() if e["type"] == "checkpoint"]
    assert [c["fields"]["entries"] for c in checkpoints] == [100]
    assert check(tmp_path).ok


def test_show_and_report_on_a_damaged_log_name_the_line(household, tmp_path):
    config, data_dir, _, _ = household
    log = data_dir / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2] = b"this is not an event\n"
    log.write_bytes(b"".join(lines))
    for command in (["audit", "show"], ["audit", "report", "--html", str(tmp_path / "r.html")]):
        result = edge_agent("--config", str(config), *command)
        assert result.returncode == 1 and "line 3" in result.stderr and "Traceback" not in result.stderr


def test_a_torn_last_line_is_cut_off_and_logged(tmp_path):
    log = AuditLog(tmp_path)
    for index in range(3):
        log.append(created(f"{index:016x}"))
    whole = log.path.read_bytes()
    torn = whole[:-30]  # a power cut in the middle of the last line
    log.path.write_bytes(torn)
    log.append(LOADED)
    types = [e["type"] for e in log.entries()]  # the recovery is signed at once
    assert types[-4:] == ["session.created", "log.recovered", "checkpoint", "config.loaded"] and len(types) == 6
    recovered = [e for e in log.entries() if e["type"] == "log.recovered"][0]["fields"]
    cut = torn[torn.rfind(b"\n") + 1 :]
    assert recovered == {"torn_bytes": len(cut), "torn_sha256": hashlib.sha256(cut).hexdigest()}
    assert verify(log, None, datetime.now(timezone.utc), timedelta(seconds=1)).ok


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path):
    log = AuditLog(tmp_path)
    for index in range(3):
        log.append(created(f"{index:016x}"))
    log.path.write_bytes(log.path.read_bytes()[:-1])  # only the newline was lost
    log.append(LOADED)
    assert [e["type"] for e in log.entries()][-2:] == ["session.created", "config.loaded"]
    assert not any(e["type"] == "log.recovered" for e in log.entries())


def test_appends_follow_a_last_line_longer_than_the_read_block(tmp_path):
    log = AuditLog(tmp_path)
    log.append(shred([f"{i:016x}" for i in range(10_000)]))  # ~200 KB
    log.append(AgentStopped(sessions=0, seconds=0.0))
    assert [e["type"] for e in log.entries()][-4:] == ["shred", "checkpoint", "agent.stopped", "checkpoint"]
    assert verify(log, None, datetime.now(timezone.utc), timedelta(seconds=1)).ok


def test_a_chained_event_missing_its_fields_is_a_problem_not_a_crash(tmp_path):
    log = AuditLog(tmp_path)  # the chain's hashes are unkeyed: anyone can append a well-chained line

    @dataclass(frozen=True)
    class KindLess(Shred):
        def to_fields(self) -> dict[str, object]:
            return {name: value for name, value in super().to_fields().items() if name != "kind"}

    log.append(KindLess(**vars(shred(["a"]))))
    result = verify(log, None, datetime.now(timezone.utc), timedelta(seconds=1))
    assert not result.ok and "'shred' event with missing or malformed fields ('kind')" in str(result.problems[0])


# -- the parallel path: chunks checked by worker processes, the same answer as one process --------

TINY_CHUNKS = Parallel(workers=2, from_bytes=0, chunk_bytes=6000)
"""The parallel path on a small log: about a dozen lines a chunk."""
ONE_PROCESS = Parallel(workers=1)


def long_log(data_dir: Path, entries: int) -> Path:
    """A valid log of about `entries` lines (sessions created and sealed, the checkpoint every
    100 lines) with the events the data check follows, written in batches as the bench does."""
    log = AuditLog(data_dir)
    log.append(LOADED)
    seq = 2
    while seq < entries:
        batch: list[AuditEvent] = []
        for number in range(seq + 1, min(entries, seq + 250) + 1):
            session = f"{number - number % 2:016x}"
            if number % 2:
                batch.append(SessionSealed(session=session, seconds=3.2, audio_sealed=True, transcript_sealed=True))
            else:
                expires = "2000-01-01T00:00:00+00:00" if number % 700 == 0 else "2099-11-28T21:00:00+00:00"
                batch.append(created(session, child=number % 3 == 0, audio_expires=expires))
        seq = log.append_many(batch)[-1]["seq"]
        log.append(ForgetRequested(request=f"r{seq}", selector="everything", sessions=1))
        log.append(shred([f"{seq - seq % 2:016x}"], late_seconds=1.5))
        log.append(Export(session=f"{seq // 6 * 6:016x}", purpose="training", seconds=1.0))  # a child's
        seq = log.append(ForgetFulfilled(request=f"r{seq}", sessions=[], buckets=[], rekeyed=[]))["seq"] + 1
    return data_dir / "audit.jsonl"


@pytest.fixture(scope="module")
def valid_log(tmp_path_factory) -> bytes:
    """The bytes of a valid log of about 1,500 lines (a hundred and fifty chunks of TINY_CHUNKS)."""
    return long_log(tmp_path_factory.mktemp("long"), 1_500).read_bytes()


@pytest.fixture
def chunks(monkeypatch) -> list[parallel.Task]:
    """The chunks the parallel path planned (empty: it was not taken)."""
    seen: list[parallel.Task] = []
    plan = parallel.plan

    def spy(*args):
        for task in plan(*args):
            seen.append(task)
            yield task

    monkeypatch.setattr(parallel, "plan", spy)
    return seen


def both_ways(data_dir: Path, chunks: list[parallel.Task]):
    """The verification in one process and in chunks; they must agree in every field."""
    alone = verify(AuditLog(data_dir), None, _now(), GRACE, parallel=ONE_PROCESS)
    assert chunks == []
    split = verify(AuditLog(data_dir), None, _now(), GRACE, parallel=TINY_CHUNKS)
    assert len(chunks) > 4, "the parallel path was not taken"
    assert split.to_json() == alone.to_json()
    return split


def written(tmp_path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    (data_dir / "audit.jsonl").write_bytes(b"\n".join(lines) + end)
    return data_dir


def edited(raw: bytes, change, rehash: bool = False) -> bytes:
    entry = json.loads(raw)
    change(entry)
    if rehash:
        entry["hash"] = entry_hash(entry)
    return canonical(entry)


def rechained(lines: list[bytes], start: int) -> list[bytes]:
    """Lines from index `start` on re-hashed onto the line before (what anyone can do: the
    hashes are unkeyed; only the checkpoints' signatures then fail)."""
    out = lines[:start]
    for raw in lines[start:]:
        previous = json.loads(out[-1])["hash"]
        out.append(edited(raw, lambda e, p=previous: e.update(prev=p), rehash=True))
    return out


def first_lines(chunks: list[parallel.Task]) -> list[int]:
    return [task.line for task in chunks]


def test_chunks_verify_a_valid_log_as_one_process_does(tmp_path, valid_log, chunks):
    data_dir = written(tmp_path, valid_log.splitlines())
    result = both_ways(data_dir, chunks)
    assert result.entries == valid_log.count(b"\n") and result.checkpoints >= 15
    messages = [str(p) for p in result.problems]  # the data check saw every chunk's events, in order
    assert any("was exported for training" in m for m in messages) and any("no shred or forget" in m for m in messages)
    lines = valid_log.splitlines()
    assert any(json.loads(lines[task.line - 1])["type"] == "checkpoint" for task in chunks[1:]), (
        "no chunk starts on a checkpoint (which signs the line before it, in the previous chunk)"
    )


def test_a_tampered_line_in_a_late_chunk_is_named_as_one_process_names_it(tmp_path, valid_log, chunks):
    lines = valid_log.splitlines()
    verify(AuditLog(written(tmp_path, lines)), None, _now(), GRACE, parallel=TINY_CHUNKS)
    late = first_lines(chunks)[-3] + 5
    chunks.clear()
    lines[late - 1] = edited(lines[late - 1], lambda e: e["fields"].update(seconds=99.0))
    result = both_ways(written(tmp_path, lines), chunks)
    assert first_bad_line(result) == late and "hash does not match" in str(result.problems[0])


def test_of_problems_in_two_chunks_the_earlier_is_reported(tmp_path, valid_log, chunks):
    lines = valid_log.splitlines()
    verify(AuditLog(written(tmp_path, lines)), None, _now(), GRACE, parallel=TINY_CHUNKS)
    starts = first_lines(chunks)
    chunks.clear()
    earlier, later = starts[20] - 1, starts[60]  # the last line of one chunk, the first of a later one
    lines[later - 1] = b"not an event"
    lines[earlier - 1] = edited(lines[earlier - 1], lambda e: e.update(seq=e["seq"] + 1), rehash=True)
    result = both_ways(written(tmp_path, lines), chunks)
    assert first_bad_line(result) == earlier and "sequence number" in str(result.problems[0])


@pytest.mark.parametrize("edit", ["relinked", "deleted", "duplicated"])
def test_a_chain_break_exactly_at_a_chunk_boundary_is_caught(tmp_path, valid_log, chunks, edit):
    lines = valid_log.splitlines()
    verify(AuditLog(written(tmp_path, lines)), None, _now(), GRACE, parallel=TINY_CHUNKS)
    boundary = first_lines(chunks)[40]
    chunks.clear()
    if edit == "relinked":  # the first line of a chunk points elsewhere, and everything after follows it
        lines[boundary - 1] = edited(lines[boundary - 1], lambda e: e.update(prev="ab" * 32), rehash=True)
        lines = rechained(lines, boundary)
        expected = f"line {boundary}: does not follow line {boundary - 1}"
    elif edit == "deleted":  # the first line of a chunk gone, the rest re-chained onto the line before
        lines = rechained(lines[: boundary - 1] + lines[boundary:], boundary - 1)
        expected = f"line {boundary}: sequence number {boundary + 1} where {boundary} belongs"
    else:
        lines.insert(boundary - 1, lines[boundary - 2])
        expected = f"line {boundary}: sequence number {boundary - 1} where {boundary} belongs"
    result = both_ways(written(tmp_path, lines), chunks)
    assert str(result.problems[0]).startswith(expected), str(result.problems[0])


def test_an_entry_split_over_two_lines_is_named_at_the_first(tmp_path, valid_log, chunks):
    """One entry cut in two at a comma, and two entries put on one later line: the lines joined by
    commas still parse as a list of as many well-formed canonical entries, but line k is not one."""
    lines = valid_log.splitlines()
    k = next(n for n in range(700, 800) if json.loads(lines[n - 1])["type"] == "session.sealed")
    cut = lines[k - 1].index(b",", lines[k - 1].index(b'"fields":{'))
    lines[k - 1 : k + 1] = [lines[k - 1][:cut], lines[k - 1][cut + 1 :]]
    lines[k + 2 : k + 4] = [lines[k + 2] + b"," + lines[k + 3]]
    result = both_ways(written(tmp_path, lines), chunks)
    assert str(result.problems[0]) == f"line {k}: not a valid audit entry (damaged, or cut off mid-line)"


def test_a_torn_last_line_in_the_last_chunk_is_named_as_one_process_names_it(tmp_path, valid_log, chunks):
    data_dir = written(tmp_path, [valid_log[: len(valid_log) - 40]], end=b"")
    result = both_ways(data_dir, chunks)
    assert first_bad_line(result) == valid_log.count(b"\n") and "cut off by a crash" in str(result.problems[0])


def test_chunks_agree_with_one_process_on_random_damage(tmp_path, valid_log, chunks):
    """Bit flips, cut lines, joined lines, deletions and edits re-chained, anywhere: the same
    verdict, the same first line, the same counts, either way."""
    rng = random.Random(20261202)
    for trial in range(24):
        lines = valid_log.splitlines()
        at = rng.randrange(1, len(lines) - 1)
        kind = trial % 6
        if kind == 0:
            damaged = bytearray(valid_log)
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            lines = bytes(damaged).split(b"\n")[:-1]
        elif kind == 1:
            lines[at : at + 1] = [lines[at][:100], lines[at][100:]]
        elif kind == 2:
            lines[at : at + 2] = [lines[at] + b"," + lines[at + 1]]
        elif kind == 3:
            lines = rechained(lines[:at] + lines[at + 1 :], at)
        elif kind == 4:
            lines[at] = edited(lines[at], lambda e: e["fields"].update(sessions=[1], audio_expires="soon"), rehash=True)
            lines = rechained(lines, at + 1)
        else:
            lines = rechained(lines[: len(lines) - rng.randrange(1, 90)] + [lines[-1]], len(lines) - 91)
        chunks.clear()
        both_ways(written(tmp_path, lines), chunks)


def test_a_log_that_changes_while_it_is_verified_is_not_passed(tmp_path, valid_log, chunks, monkeypatch):
    """The planner reads the line before each chunk, the worker of the chunk before verifies it:
    if they differ (the file was rewritten meanwhile), the chunks do not link."""
    seed_of = chain.seed_of
    calls = iter(range(1_000))
    monkeypatch.setattr(parallel, "seed_of", lambda raw: seed_of(raw.replace(b'"seq":', b'"seq": ')) if next(calls) == 30 else seed_of(raw))
    result = verify(AuditLog(written(tmp_path, valid_log.splitlines())), None, _now(), GRACE, parallel=TINY_CHUNKS)
    assert str(result.problems[0]) == f"line {first_lines(chunks)[31]}: the log changed while it was being verified: verify it again"


def test_a_large_log_takes_the_parallel_path_by_default_and_a_small_one_does_not(tmp_path, chunks):
    small = tmp_path / "small"
    long_log(small, 300)
    assert verify(AuditLog(small), None, _now(), GRACE).entries > 300 and chunks == []
    large = tmp_path / "large"
    size = long_log(large, 65_000).stat().st_size
    assert size >= Parallel().from_bytes
    result = verify(AuditLog(large), None, _now(), GRACE)
    assert len(chunks) >= 4 and result.entries >= 65_000 and result.checkpoints >= 650
    assert all("expired" in str(p) or "training" in str(p) for p in result.problems)


def test_with_another_thread_running_verify_stays_in_one_process(tmp_path, valid_log, chunks):
    """A forked worker has only the forking thread: another thread's locks would never be released."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        result = verify(AuditLog(written(tmp_path, valid_log.splitlines())), None, _now(), GRACE, parallel=TINY_CHUNKS)
    finally:
        stop.set()
        other.join()
    assert chunks == [] and result.entries == valid_log.count(b"\n")


def test_the_config_path_is_audited_absolute(write_config, speech, tmp_path):
    """A relative --config is recorded as the file it named, not as typed."""
    config = write_config()
    clip = speech.say("메시지")
    ran = subprocess.run(
        [sys.executable, "-m", "edge", "--config", config.name, "run", "--input", str(clip)],
        capture_output=True,
        text=True,
        cwd=config.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    (loaded,) = [e for e in AuditLog(tmp_path / "data").entries() if e["type"] == "config.loaded"]
    assert loaded["fields"]["path"] == str(config)


def test_a_long_verify_says_how_far_it_has_come(tmp_path, valid_log):
    (tmp_path / "audit.jsonl").write_bytes(valid_log)
    heard: list[tuple[int, int]] = []
    result = verify(AuditLog(tmp_path), None, _now(), GRACE, parallel=TINY_CHUNKS, progress=lambda done, total: heard.append((done, total)))
    assert result.entries > 1000
    assert len(heard) > 10 and heard[-1] == (len(valid_log), len(valid_log))
    assert [done for done, _ in heard] == sorted({done for done, _ in heard})  # forward only, each chunk once


def _keeping_nothing(session: str, **more: Any) -> SessionCreated:
    """A child's session.created that keeps nothing (no bucket), with `more` fields."""
    return SessionCreated(
        session=session,
        profile="child",
        rule="given",
        child=True,
        audio_expires=None,
        transcript_expires=None,
        audio_bucket=None,
        transcript_bucket=None,
        **more,
    )


# -- sealed details (docs/FORMATS.md section 6, "Sealed details") ----------------------------


def test_sealed_details_are_shown_and_checked_while_kept_and_forgotten_with_the_data(write_config):
    """A kept session's start and length are sealed under its own details key: `audit show`
    opens them and verify holds the start to the policy while the session lives; after the
    shred of its last data both say the details were forgotten, and the log still verifies."""
    from edge.config import load_config
    from edge.store.details import FORGOTTEN
    from edge.written.terms import terms_of

    from support import FakeWall, record_in_process, retention_parts

    path = write_config(mode="always")
    config = load_config(path)
    wall = FakeWall(datetime.now(timezone.utc) - timedelta(days=7, hours=2))  # the commands run on the real clock
    clock, store, shredder = retention_parts(config, wall)
    version = terms_of(config, store.vault.level).version
    from edge.store.export import export_audio
    from edge.values import Purpose

    session = record_in_process(store, clock, config, "child", policy=version)
    data = config.device.data_dir
    export_audio(store, AuditLog(data), config, session, path.parent / "played.wav", Purpose.PLAYBACK, clock.now())
    [exported] = [e["fields"] for e in AuditLog(data).entries() if e["type"] == "export"]
    assert exported["purpose"] == "playback" and "seconds" not in exported and exported["details"] == 1  # its length, sealed

    def shown() -> list[str]:
        out = edge_agent(
            "--config", str(path), "audit", "show", "--type", "session.created", "--type", "session.sealed", "--type", "export"
        )
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if session in line]

    created, sealed, export = shown()
    assert "created=20" in created and "seconds=2.4" in sealed and "seconds=2.4" in export and "purpose=playback" in export
    assert " sealed=" not in created + sealed + export and " details=" not in created + sealed + export
    result = verify(AuditLog(data), store, clock.now(), timedelta(seconds=2))
    assert result.ok and result.details_forgotten == 0, result.problems
    assert FORGOTTEN not in edge_agent("--config", str(path), "audit", "report", "--html", "-").stdout

    wall.advance(7 * 86400)  # past both expiries
    shredder.sweep()
    assert session not in store.read().sessions
    created, sealed, export = shown()
    assert all(f"details={FORGOTTEN}" in line for line in (created, sealed, export)) and "seconds" not in sealed + export
    page = edge_agent("--config", str(path), "audit", "report", "--html", "-")
    assert page.returncode == 0 and f"({FORGOTTEN})" in page.stdout, page.stderr  # its row on the timeline says so
    result = verify(AuditLog(data), store, clock.now(), timedelta(seconds=2))
    assert result.ok and result.details_forgotten == 1, result.problems
    verified = edge_agent("--config", str(path), "audit", "verify")
    assert verified.returncode == 0 and "details of 1 session(s)" in verified.stdout, verified.stdout


def test_sealed_details_vector_from_formats_opens_and_nothing_else_does():
    """docs/FORMATS.md's vector, made with pyca's HKDF and ChaCha20-Poly1305 directly (not
    edge's seal): edge opens it; another key, session or line type, or one byte changed, opens nothing."""
    from edge.store.details import open_sealed

    vector, key, session = "qqqqqqqqqqqqqqqqqbVpIea6DoLtZXZo5MYrwPHXqrdNjHwJqB88UX8EUw==", bytes(range(32)).hex(), "0011223344556677"
    assert "`" + vector + "`" in (ROOT / "docs" / "FORMATS.md").read_text(encoding="utf-8")
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=b"edge/v2 audit details").derive(bytes(range(32)))
    made = ChaCha20Poly1305(derived).encrypt(b"\xaa" * 12, b'{"seconds":2.5}', f"edge audit details {session} session.sealed".encode())
    assert base64.b64encode(b"\xaa" * 12 + made).decode() == vector
    assert open_sealed(vector, key, session, "session.sealed") == {"seconds": 2.5}
    raw = bytearray(base64.b64decode(vector))
    raw[20] ^= 1
    assert open_sealed(base64.b64encode(raw).decode(), key, session, "session.sealed") is None
    assert open_sealed(vector, "ff" * 32, session, "session.sealed") is None
    assert open_sealed(vector, key, "0011223344556678", "session.sealed") is None
    assert open_sealed(vector, key, session, "session.created") is None
    assert open_sealed(vector, None, session, "session.sealed") is None
    assert open_sealed("not base64!", key, session, "session.sealed") is None


def test_verify_holds_a_sealed_start_to_the_policy(write_config):
    """A faulty edge's session whose sealed start is 8 days before its transcript's expiry
    (the child may keep transcripts 7 days): verify opens the start with the key the
    keystore holds for it and names the session."""
    from dataclasses import replace

    from edge.config import load_config
    from edge.disk.lock import DataLock
    from edge.store.details import new_key, seal
    from edge.written.terms import terms_of

    from support import FakeWall, record_in_process, retention_parts

    config = load_config(write_config(mode="always"))
    clock, store, _shredder = retention_parts(config, FakeWall())
    version = terms_of(config, store.vault.level).version
    session = record_in_process(store, clock, config, "child", policy=version)
    data = config.device.data_dir
    real = store.read().sessions[session]
    bucket = store.read().buckets[real.transcript_bucket]

    def forged(name: str, start: datetime) -> SessionCreated:
        key = new_key()
        with DataLock(data), store.transaction() as rows:
            rows.sessions[name] = replace(real, id=name, created=start, details=key)
        return SessionCreated(
            session=name,
            profile="child",
            rule="given",
            child=True,
            audio_expires=None,
            transcript_expires=bucket.expires.isoformat(),
            audio_bucket=None,
            transcript_bucket=bucket.id,
            policy=version,
            details=1,
            sealed=seal({"created": start.isoformat()}, key, name, "session.created"),
        )

    AuditLog(data).append_many(
        [forged("00000000000000bb", bucket.expires - timedelta(days=8)), forged("00000000000000cc", bucket.expires - timedelta(days=6))],
        checkpoint=True,
    )
    problems = verify(AuditLog(data), store, clock.now(), timedelta(seconds=2)).problems
    [longer] = [p.message for p in problems]
    assert "00000000000000bb" in longer and "longer than policy" in longer and "604800 s" in longer


def test_a_sealed_field_also_in_clear_or_a_details_marker_without_sealed_is_malformed(write_config):
    """Hashes are unkeyed: a line that gives its start both in clear and sealed, or `details`
    without `sealed`, is named by verify as malformed, not read one way or the other."""
    from edge.config import load_config

    from support import FakeWall, retention_parts

    config = load_config(write_config(mode="always"))
    clock, store, _shredder = retention_parts(config, FakeWall())
    data = config.device.data_dir

    AuditLog(data).append_many(
        [
            _keeping_nothing("00000000000000e1", created="2026-12-01T00:00:00+00:00", details=1, sealed="AAAA"),
            _keeping_nothing("00000000000000e2", details=1),
        ],
        checkpoint=True,
    )
    problems = [p.message for p in verify(AuditLog(data), store, clock.now(), timedelta(seconds=2)).problems]
    assert len(problems) == 2 and all("malformed" in p for p in problems), problems
    assert "'created' in clear beside 'sealed'" in problems[0] and "'details' must be 1 with 'sealed'" in problems[1], problems


def test_a_format_1_session_with_its_details_in_clear_still_verifies_and_shows(write_config):
    """Lines written before sealed details keep `created` and `seconds` in clear: read as before."""
    path = write_config()
    data = path.parent / "data"
    AuditLog(data).append_many(
        [
            _keeping_nothing("00000000000000cc"),
            SessionSealed(session="00000000000000cc", seconds=3.2, audio_sealed=False, transcript_sealed=False),
        ],
        checkpoint=True,
    )
    line = json.loads((data / "audit.jsonl").read_bytes().splitlines()[-2])
    assert line["fields"] == {"session": "00000000000000cc", "seconds": 3.2, "audio_sealed": False, "transcript_sealed": False}
    out = edge_agent("--config", str(path), "audit", "show", "--type", "session.sealed")
    assert out.returncode == 0 and "seconds=3.2" in out.stdout, out.stderr
    assert edge_agent("--config", str(path), "audit", "verify").returncode == 0


def test_a_session_that_keeps_nothing_logs_no_start_and_verifies(write_config):
    """Under a written policy, a session that keeps nothing writes neither `created` nor
    `sealed` (it has no details to forget): verify has nothing to measure and passes."""
    from edge.config import load_config
    from edge.written.terms import terms_of

    from support import FakeWall, retention_parts

    config = load_config(write_config(mode="always"))
    clock, store, _shredder = retention_parts(config, FakeWall())
    version = terms_of(config, store.vault.level).version
    data = config.device.data_dir
    nothing = _keeping_nothing("00000000000000dd", policy=version)
    AuditLog(data).append(nothing)
    fields = json.loads((data / "audit.jsonl").read_bytes().splitlines()[-2])["fields"]
    assert fields["session"] == "00000000000000dd" and not {"created", "sealed", "details"} & fields.keys()
    result = verify(AuditLog(data), store, clock.now(), timedelta(seconds=2))
    assert result.ok and result.details_forgotten == 0, result.problems
