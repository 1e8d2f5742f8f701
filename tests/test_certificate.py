"""Deletion certificates: issued from a real household's log for a real forget and a real
expiry shred, checked with openssl, confirmed by `audit verify --certificate`, and refused
when edited, when their claims differ from the log (even re-signed with the audit key), and
against a log cut short before the lines they certify."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import wiring
from edge.audit.certificate import FORMAT, CertificateError, Scope, build, check, encode
from edge.audit.log import AuditLog
from edge.events import RootLost, SessionCreated
from edge.retention.shredder import ForgetRequest

from support import FakeWall, edge_agent, enrolled_household, faketime, record


@pytest.fixture
def forgotten_and_shredded(write_config, speech, tmp_path):
    """Two child sessions; the first forgotten by a command, the second's audio shredded by
    the schedule two hours later (a purge under faketime: child audio is kept 1 hour)."""
    config = write_config(mode="always")
    clip = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0)
    sessions = record(config, clip, profile="child")
    assert len(sessions) == 2
    forgot = edge_agent("--config", str(config), "forget", "--session", sessions[0], "--yes")
    assert forgot.returncode == 0, forgot.stderr
    purged = faketime("+2h", "purge", config=config)
    assert purged.returncode == 0 and "shredded audio" in purged.stdout, purged.stdout + purged.stderr
    return config, config.parent / "data", sessions


def _entries(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]


def _request_of(data: Path) -> str:
    (request,) = {e["fields"]["request"] for e in _entries(data) if e["type"] == "forget.requested"}
    return request


def _certificate(config: Path, out: Path, *scope: str) -> subprocess.CompletedProcess[str]:
    return faketime("+2h", "audit", "certificate", *scope, "--out", str(out), config=config)


def _verify(config: Path, certificate: Path) -> subprocess.CompletedProcess[str]:
    return faketime("+2h", "audit", "verify", "--certificate", str(certificate), config=config)


def _openssl(pem: Path, document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pem), "-rawin", "-in", str(document), "-sigfile", f"{document}.sig"],
        capture_output=True,
        text=True,
    )


def test_a_forget_and_an_expiry_shred_are_certified_and_confirmed_against_the_log(forgotten_and_shredded, tmp_path):
    config, data, (forgotten, expired) = forgotten_and_shredded
    request = _request_of(data)
    by_request, by_session = tmp_path / "forget.json", tmp_path / "expired.json"
    made = _certificate(config, by_request, "--request", request)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "1 session(s), 1 recording(s), 1 transcript(s)" in made.stdout
    made = _certificate(config, by_session, "--session", expired)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "still kept: its transcript, until" in made.stdout
    assert (by_request.stat().st_mode & 0o777) == 0o600 and len(Path(f"{by_request}.sig").read_bytes()) == 64

    body = json.loads(by_request.read_bytes())
    assert by_request.read_bytes() == encode(body)  # canonical JSON and a newline, as the log's lines
    assert body["format"] == FORMAT and body["scope"] == {"request": request}
    (deletion,) = body["deletions"]
    assert deletion["asked"] == {
        "by": "command",
        "reason": "forget",
        "request": request,
        "selector": f"session {forgotten}",
        "at": deletion["lines"][0]["wall"],
    }
    assert deletion["destroyed"]["sessions"] == [forgotten]
    assert (deletion["destroyed"]["audio"], deletion["destroyed"]["transcripts"]) == (1, 1)
    assert deletion["root"] == {"backend": "keyring", "level": "crypto-erase", "survives_reboot": False}
    assert (deletion["lines"][0]["type"], deletion["lines"][-1]["type"]) == ("forget.requested", "forget.fulfilled")
    entries = _entries(data)
    for line in deletion["lines"]:  # the lines it names are the log's, at their places
        assert entries[line["seq"] - 1]["hash"] == line["hash"] and entries[line["seq"] - 1]["type"] == line["type"]
    anchor = entries[body["checkpoint"]["line"] - 1]
    assert anchor["type"] == "checkpoint" and anchor["fields"]["signature"] == body["checkpoint"]["signature"]
    assert anchor["fields"]["entries"] >= deletion["lines"][-1]["seq"]

    shredded = json.loads(by_session.read_bytes())
    (schedule,) = shredded["deletions"]
    assert schedule["asked"]["by"] == "schedule" and schedule["asked"]["reason"] == "expired"
    assert schedule["destroyed"]["audio"] == 1 and schedule["destroyed"]["transcripts"] == 0
    assert schedule["destroyed"]["buckets"] == [entries[schedule["lines"][0]["seq"] - 1]["fields"]["bucket"]]
    assert [p["kind"] for p in shredded["pending"]] == ["transcript"]

    for document in (by_request, by_session):  # nothing it says is private
        text = document.read_text()
        assert "메시지" not in text and "아버지" not in text and "secret" not in text and "age1" not in text

    pem = tmp_path / "audit.pem"
    assert edge_agent("--config", str(config), "audit", "export-key", "--out", str(pem)).returncode == 0
    for document in (by_request, by_session):
        checked = _openssl(pem, document)
        assert checked.returncode == 0 and "Signature Verified Successfully" in checked.stdout, checked.stdout + checked.stderr
        confirmed = _verify(config, document)
        assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
        assert f"certificate {document}: valid" in confirmed.stdout


def test_a_session_still_kept_is_refused_saying_until_when(write_config, speech, tmp_path):
    config = write_config(mode="always")
    (session,) = record(config, speech.say("메시지"), profile="child")
    refused = edge_agent("--config", str(config), "audit", "certificate", "--session", session, "--out", str(tmp_path / "c.json"))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"session {session} is not shredded yet: its audio is kept until" in refused.stderr
    assert "its transcript is kept until" in refused.stderr and not (tmp_path / "c.json").exists()
    unknown = edge_agent("--config", str(config), "audit", "certificate", "--request", "feedbeef", "--out", str(tmp_path / "c.json"))
    assert unknown.returncode == 1 and "no forget request feedbeef in the audit log" in unknown.stderr
    for args, said in (
        (["audit", "certificate", "--since", "yesterday", "--out", str(tmp_path / "c.json")], "--since 'yesterday' is not an ISO 8601"),
        (["audit", "certificate", "--session", session, "--request", "x", "--out", "c.json"], "not allowed with argument"),
        (["audit", "verify", "--certificate", str(tmp_path / "none.json")], "none.json: cannot read the certificate"),
    ):
        wrong = edge_agent("--config", str(config), *args)
        assert wrong.returncode == 2 and said in wrong.stderr and "Traceback" not in wrong.stderr, wrong.stderr


def test_an_edited_certificate_fails_its_signature(forgotten_and_shredded, tmp_path):
    config, data, _ = forgotten_and_shredded
    document = tmp_path / "forget.json"
    assert _certificate(config, document, "--request", _request_of(data)).returncode == 0
    pem = tmp_path / "audit.pem"
    assert edge_agent("--config", str(config), "audit", "export-key", "--out", str(pem)).returncode == 0
    document.write_bytes(document.read_bytes().replace(b'"audio":1', b'"audio":0'))
    assert _openssl(pem, document).returncode != 0
    failed = _verify(config, document)
    assert failed.returncode == 1, failed.stdout
    assert f"certificate {document} FAILED: its signature does not verify with this log's key" in failed.stdout


def test_claims_that_differ_from_the_log_fail_even_signed_with_the_audit_key(forgotten_and_shredded, tmp_path):
    """Whoever holds audit.key can sign anything: the check that counts is the log's word."""
    config, data, _ = forgotten_and_shredded
    document = tmp_path / "forget.json"
    assert _certificate(config, document, "--request", _request_of(data)).returncode == 0
    body = json.loads(document.read_bytes())
    body["deletions"][0]["destroyed"]["audio"] = 3
    body["totals"]["audio"] = 3
    forged = encode(body)
    document.write_bytes(forged)
    Path(f"{document}.sig").write_bytes(Ed25519PrivateKey.from_private_bytes((data / "audit.key").read_bytes()).sign(forged))
    pem = tmp_path / "audit.pem"
    assert edge_agent("--config", str(config), "audit", "export-key", "--out", str(pem)).returncode == 0
    assert _openssl(pem, document).returncode == 0  # the signature alone is fine
    failed = _verify(config, document)
    assert failed.returncode == 1, failed.stdout
    assert "FAILED: deletions[0].destroyed.audio: the certificate says 3, the log says 1" in failed.stdout
    assert "also: totals.audio: the certificate says 3, the log says 1" in failed.stdout


def test_a_log_cut_short_before_the_certified_lines_fails(forgotten_and_shredded, tmp_path):
    """The log cut off cleanly at the checkpoint before the forget (a valid shorter chain):
    the certificate, like a witness, shows what is missing."""
    config, data, _ = forgotten_and_shredded
    document = tmp_path / "forget.json"
    assert _certificate(config, document, "--request", _request_of(data)).returncode == 0
    first = json.loads(document.read_bytes())["deletions"][0]["lines"][0]["seq"]
    lines = (data / "audit.jsonl").read_bytes().splitlines(keepends=True)
    cut = max(i for i, raw in enumerate(lines[: first - 1]) if json.loads(raw)["type"] == "checkpoint") + 1
    (data / "audit.jsonl").write_bytes(b"".join(lines[:cut]))
    failed = _verify(config, document)
    assert failed.returncode == 1, failed.stdout
    assert f"it certifies line {first}, but the log has only {cut} entries: the log was truncated" in failed.stdout


def test_voiceprints_forgotten_by_a_command_and_purged_for_inactivity_are_certified(write_config, voices, encoder):  # noqa: F811
    """A household with three enrolled voices: the guest's voiceprint forgotten (as `voices
    forget` asks), then the child's purged by the schedule, unheard for its inactive_after."""
    start = datetime.now(timezone.utc)
    config, wall, clock, store, shredder = enrolled_household(write_config, voices, encoder, FakeWall(start))
    shredder.forget(ForgetRequest.checked(config, store.read(), voice="guest"))
    wall.advance(2 * 86400 + 60)  # the child's inactive_after
    assert "child" in shredder.sweep().voices
    log, levels = shredder.audit, wiring.guarantee_levels()
    issued = clock.now().isoformat()
    (request,) = {e["fields"]["request"] for e in log.entries() if e["type"] == "forget.requested"}
    asked = build(log.entries(), Scope(request=request), issued, levels)
    (forget,) = asked["deletions"]
    assert forget["asked"]["by"] == "command" and forget["asked"]["selector"] == "the voiceprint of guest"
    assert forget["destroyed"]["voiceprints"] == ["guest"] and forget["destroyed"]["sessions"] == []
    every = build(log.entries(), Scope(since=start), issued, levels)
    assert [d["asked"]["reason"] for d in every["deletions"]] == ["forget", "inactive"]
    purged = every["deletions"][1]
    assert purged["asked"]["by"] == "schedule" and purged["asked"]["selector"] == "the voiceprint of child"
    assert purged["destroyed"]["voiceprints"] == ["child"] and every["totals"]["voiceprints"] == 2
    assert [line["type"] for line in purged["lines"]] == ["voice.forgotten"]
    for body in (asked, every):
        document = encode(body)
        assert check(document, log.sign_document(document), log.entries(), levels) == []
        assert b"vector" not in document


def test_a_session_whose_root_was_lost_is_refused_not_certified(tmp_path):
    """Data made unreadable by a lost root (a power cut with the keyring vault) was never
    deleted by anyone: a certificate would claim what the log does not say."""
    log = AuditLog(tmp_path)
    kept = SessionCreated("5e551011", "child", "active", True, "2099-11-28T21:00:00+00:00", None, "child.audio.x", None)
    log.append_many([kept, RootLost(backend="keyring", reason="the device restarted")], checkpoint=True)
    with pytest.raises(CertificateError, match=r"session 5e551011 was not deleted: .* the vault's root key was lost \(line 3, "):
        build(log.entries(), Scope(session="5e551011"), "2026-12-07T00:00:00+00:00", wiring.guarantee_levels())
