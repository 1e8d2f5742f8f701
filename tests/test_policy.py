"""The written retention policy (`edge-agent policy`), its versions adopted in the audit log,
the version each session is taken under, and `audit verify` holding every session to it;
and inactive profiles: notice in status, doctor and the report, `profile keep`, the purge.

All on real parts: the real CLI, config, vault (the session keyring), audit log and Vosk."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edge.events import SessionCreated

from support import Retention, edge_agent, faketime, file_vault, record, sealed_details

LISTENER = '\n[[wyoming]]\nuri = "unix:///tmp/edge-policy-test.sock"\nprofile = "child"\nname = "kids speaker"\n'


def _entries(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]


def _of(data: Path, kind: str) -> list[dict]:
    return [e["fields"] for e in _entries(data) if e["type"] == kind]


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def test_the_policy_is_written_from_the_config_in_text_html_and_json(write_config, tmp_path):
    config = write_config(parent=Retention("adult", "0s", "30d"), child=Retention("child", "1h", "7d", inactive_after="30d"))
    config.write_text(config.read_text() + LISTENER)
    text = edge_agent("--config", str(config), "policy")
    assert text.returncode == 0, text.stderr
    words = text.stdout
    # per profile, and the unknown speaker (here a synthetic one: no profile is strictest in both kinds)
    for heading in ("== parent ==", "== child ==", "== unknown speakers", "== the household =="):
        assert heading in words, words
    assert "-- voiceprint --" in words and "-- audit log --" in words
    assert "1 hour (3600 s, 1h)" in words and "7 days (604800 s, 7d)" in words  # words and exact durations
    assert "capped at 1 day (86400 s, 1d)" in words  # the child caps shown
    assert "Never stored (0 s)" in words  # the parent keeps no audio
    assert '"kids speaker"' in words  # the only place text leaves the device, named
    assert "Never used for training and never exported for it: the profile is a child's." in words
    assert "By voice: Not offered" in words  # no [voice_commands]: no spoken deletion requests, honestly
    assert "keyring vault, off the memory card" in words  # the guarantee level in plain words
    assert "not adopted yet" in text.stderr  # nothing ran under it yet, and `policy` writes nothing
    assert not (tmp_path / "data" / "audit.jsonl").exists()

    out = tmp_path / "policy.json"
    written = edge_agent("--config", str(config), "policy", "--format", "json", "--out", str(out))
    assert written.returncode == 0, written.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    document = json.loads(out.read_text())
    assert document["version"] == hashlib.sha256(_canonical(document["terms"])).hexdigest()
    terms = document["terms"]
    assert terms["unknown_speakers"] == "_unknown"
    assert terms["profiles"]["_unknown"] == {
        "kind": "child",
        "audio_seconds": 0,
        "transcript_seconds": 604800,
        "inactive_after_seconds": 30 * 86400,
        "training": False,
    }
    assert terms["child_caps"] == {"audio_seconds": 86400, "transcript_seconds": 30 * 86400}
    assert terms["wyoming"] == [{"name": "kids speaker", "profile": "child", "keep_unrecognised": False}]
    kinds = {(c["profile"], c["kind"]) for c in document["clauses"]}
    assert {
        ("child", "audio"),
        ("child", "transcript"),
        ("child", "voiceprint"),
        ("_unknown", "audio"),
        ("household", "audit log"),
    } <= kinds
    assert all(set(c) >= {"purpose", "why_kept", "how_long", "deletion", "never", "who_sees", "ask_deletion"} for c in document["clauses"])

    page = tmp_path / "policy.html"
    assert edge_agent("--config", str(config), "policy", "--format", "html", "--out", str(page)).returncode == 0
    assert page.read_text().startswith("<!doctype html>") and document["version"] in page.read_text()

    link = tmp_path / "link.html"
    link.symlink_to(tmp_path / "elsewhere.html")
    refused = edge_agent("--config", str(config), "policy", "--out", str(link))
    assert refused.returncode == 2 and "symbolic link" in refused.stderr and "Traceback" not in refused.stderr
    inside = edge_agent("--config", str(config), "policy", "--out", str(tmp_path / "data" / "p.txt"))
    assert inside.returncode != 0 and "Traceback" not in inside.stderr
    on_file = write_config("file.toml", vault=file_vault(tmp_path / "root.key"))
    said = edge_agent("--config", str(on_file), "policy", "--format", "json")
    assert said.returncode == 0, said.stderr
    file_terms = json.loads(said.stdout)
    assert file_terms["terms"]["vault"] == {"backend": "file", "crypto_erase": False, "survives_reboot": True}
    assert "deletion is logical only" in file_terms["clauses"][0]["deletion"] and file_terms["version"] != document["version"]
    bad = edge_agent("--config", str(config), "policy", "--format", "pdf")
    assert bad.returncode == 2 and "text" in bad.stderr and "html" in bad.stderr


def test_each_version_is_adopted_once_sessions_carry_it_and_verify_holds_them_to_it(write_config, speech):
    config = write_config()
    data = config.parent / "data"
    first = json.loads(edge_agent("--config", str(config), "policy", "--format", "json").stdout)["version"]
    [session] = record(config, speech.say("메시지"), profile="child")
    [adopted] = _of(data, "policy.adopted")
    assert adopted["version"] == first and adopted["previous"] is None
    assert set(adopted["changed"]) >= {"profiles", "vault", "child_caps"}
    [created] = [sealed_details(config, e) for e in _entries(data) if e["type"] == "session.created"]
    assert created["session"] == session and created["policy"] == first
    assert datetime.fromisoformat(created["created"]) <= datetime.fromisoformat(created["audio_expires"])
    types = [e["type"] for e in _entries(data)]
    assert types.index("policy.adopted") < types.index("session.created")

    record(config, speech.say("보안"), profile="parent")  # same config: no new version
    assert len(_of(data, "policy.adopted")) == 1
    (data / "policy.json").unlink()  # the cache lost: the version in force is read back from the log, and remembered
    assert edge_agent("--config", str(config), "purge").returncode == 0
    assert len(_of(data, "policy.adopted")) == 1 and json.loads((data / "policy.json").read_text())["version"] == first
    assert stat.S_IMODE((data / "policy.json").stat().st_mode) == 0o600
    status = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)
    assert status["policy"]["version"] == first and status["policy"]["since"]

    config.write_text(config.read_text().replace('keep_transcript = "7d"', 'keep_transcript = "2d"'))
    assert edge_agent("--config", str(config), "purge").returncode == 0  # any command that writes adopts it
    [_, second] = _of(data, "policy.adopted")
    assert second["previous"] == first and second["changed"] == ["profiles.child.transcript_seconds"]
    assert second["terms"]["profiles"]["child"]["transcript_seconds"] == 2 * 86400
    verified = edge_agent("--config", str(config), "audit", "verify", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"], verified.stdout

    report = config.parent / "report.html"
    assert edge_agent("--config", str(config), "audit", "report", "--html", str(report)).returncode == 0
    page = report.read_text()
    opening = page.index("<h2>")
    assert page[opening:].startswith("<h2>The retention policy in force</h2>")
    assert f"Policy <code>{second['version'][:12]}</code> is in force since" in page
    assert "changed: profiles.child.transcript_seconds" in page and "the first policy this log records" in page


def test_verify_names_a_session_taken_under_no_adopted_policy_or_kept_longer_than_it_allows(write_config, speech):
    from edge.audit.log import AuditLog

    config = write_config()
    data = config.parent / "data"
    record(config, speech.say("메시지"), profile="child")
    [adopted] = _of(data, "policy.adopted")
    now = datetime.now(timezone.utc)

    def created(session: str, policy: str, transcript: timedelta) -> None:  # as a faulty edge would log it
        AuditLog(data).append(
            SessionCreated(
                session=session,
                profile="child",
                rule="given",
                child=True,
                audio_expires=None,
                transcript_expires=(now + transcript).isoformat(),
                audio_bucket=None,
                transcript_bucket=None,
                policy=policy,
                created=now.isoformat(),
            )
        )

    created("00000000000000aa", "f" * 64, timedelta(days=1))
    created("00000000000000bb", adopted["version"], timedelta(days=8))  # the child may keep transcripts 7 days
    created("00000000000000cc", adopted["version"], timedelta(days=6, hours=23))  # within it: fine
    verified = edge_agent("--config", str(config), "audit", "verify", "--json")
    problems = [p["message"] for p in json.loads(verified.stdout)["problems"]]
    assert verified.returncode == 1
    [unadopted] = [p for p in problems if "00000000000000aa" in p]
    assert unadopted.endswith(f"session 00000000000000aa was taken under policy {'f' * 12}, which no policy.adopted before it names")
    [longer] = [p for p in problems if "00000000000000bb" in p]
    assert "longer than policy" in longer and "604800 s" in longer
    assert not [p for p in problems if "00000000000000cc" in p]


def test_an_old_log_whose_sessions_carry_no_policy_still_verifies(write_config, speech):
    from edge.audit.log import AuditLog

    config = write_config()
    data = config.parent / "data"
    record(config, speech.say("메시지"), profile="child")
    AuditLog(data).append(
        SessionCreated(
            session="00000000000000dd",
            profile="gone-profile",
            rule="given",
            child=False,
            audio_expires=None,
            transcript_expires=None,
            audio_bucket=None,
            transcript_bucket=None,
        )
    )
    verified = edge_agent("--config", str(config), "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout


def test_a_profile_near_its_inactivity_purge_is_listed_kept_by_a_parent_and_then_purged(write_config, speech):
    config = write_config(parent=Retention("adult", "24h", "30d", inactive_after="2h"))
    data = config.parent / "data"
    record(config, speech.say("메시지"), profile="parent")
    heard = datetime.fromisoformat(sealed_details(config, next(e for e in _entries(data) if e["type"] == "session.created"))["created"])

    now = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)
    assert now["inactive"] == []  # 2 h away: outside its notice (half its inactive_after)

    soon = json.loads(faketime("+90m", "--config", str(config), "status", "--json", config=config).stdout)
    [notice] = soon["inactive"]
    assert notice["profile"] == "parent" and notice["sessions"] == 1 and notice["voiceprint"] is False
    purge = datetime.fromisoformat(notice["purge"])
    assert heard + timedelta(hours=2) - timedelta(hours=1) <= purge <= heard + timedelta(hours=2)  # its bucket's window, rounded down
    assert "edge-agent profile keep parent" in notice["kept_by"]
    text = faketime("+90m", "--config", str(config), "status", config=config).stdout
    assert "inactive: parent: unheard since" in text and "profile keep parent" in text
    doctor = json.loads(faketime("+90m", "--config", str(config), "doctor", "--json", "--no-mic", config=config).stdout)
    [finding] = [f for f in doctor if f["check"] == "inactive profiles"]
    assert finding["status"] == "warn" and "parent" in finding["detail"] and "profile keep parent" in finding["fix"]

    report = config.parent / "report.html"
    made = faketime("+90m", "--config", str(config), "audit", "report", "--html", str(report), config=config)
    assert made.returncode == 0, made.stderr
    coming = report.read_text().split("<h2>Inactive profiles</h2>")[1].split("<h2>")[0]
    assert "<td>parent</td>" in coming and "<code>edge-agent profile keep parent</code>" in coming and "1 session(s)" in coming

    late = faketime("+150m", "--config", str(config), "profile", "keep", "parent", config=config)  # due at +2h: too late
    assert late.returncode != 0 and "was due at" in late.stderr and not _of(data, "profile.kept"), late
    kept = faketime("+90m", "--config", str(config), "profile", "keep", "parent", config=config)
    assert kept.returncode == 0, kept.stderr
    [logged] = _of(data, "profile.kept")
    assert logged["profile"] == "parent" and logged["source"] == "command"
    assert datetime.fromisoformat(logged["until"]) - datetime.fromisoformat(logged["heard"]) >= timedelta(hours=3)
    assert json.loads(faketime("+90m", "--config", str(config), "status", "--json", config=config).stdout)["inactive"] == []
    purged = faketime("+3h", "--config", str(config), "purge", config=config)  # without the keep, it would go now
    assert purged.returncode == 0 and not _of(data, "shred"), purged.stdout

    purged = faketime("+4h", "--config", str(config), "purge", config=config)
    assert purged.returncode == 0, purged.stderr
    assert {(s["profile"], s["reason"]) for s in _of(data, "shred")} == {("parent", "inactive")}
    made = faketime("+4h", "--config", str(config), "audit", "report", "--html", str(report), config=config)
    assert made.returncode == 0, made.stderr
    section = report.read_text().split("<h2>Inactive profiles</h2>")[1].split("<h2>")[0]
    assert "kept from its inactivity purge by a parent" in section
    assert "audio of 1 session(s) purged for inactivity" in section and "transcript of 1 session(s) purged for inactivity" in section

    unknown = edge_agent("--config", str(config), "profile", "keep", "nobody")
    assert unknown.returncode == 2 and "nobody" in unknown.stderr and "Traceback" not in unknown.stderr
    nothing = edge_agent("--config", str(config), "profile", "keep", "child")
    assert nothing.returncode == 0 and "nothing of child is kept" in nothing.stdout
    assert len(_of(data, "profile.kept")) == 1
    assert os.path.exists(data / "policy.json")


def test_the_policy_says_what_can_be_asked_by_voice_from_the_config(write_config):
    """[voice_commands] is in the terms (a new version when it changes) and the words name the
    phrases; without it the terms are as before (an existing household's version stays)."""
    config = write_config()
    before = json.loads(edge_agent("--config", str(config), "policy", "--format", "json").stdout)
    assert "voice_commands" not in before["terms"]
    config.write_text(
        config.read_text()
        + '\n[voice_commands]\nforget_last = "마지막 기록 지워"\nconfirm = "네"\nguest_on = "게스트 모드"\nguest_off = "게스트 모드 꺼"\n'
    )
    after = json.loads(edge_agent("--config", str(config), "policy", "--format", "json").stdout)
    assert after["version"] != before["version"]
    assert after["terms"]["voice_commands"] == {
        "forget_last": "마지막 기록 지워",
        "confirm": "네",
        "guest_on": "게스트 모드",
        "guest_off": "게스트 모드 꺼",
        "guest_limit_seconds": 7200,
        "confirm_window_seconds": 10,
    }
    words = edge_agent("--config", str(config), "policy").stdout
    assert 'By voice: Say "마지막 기록 지워" to forget your own latest kept session. Each waits for "네"' in words, words
    assert '"게스트 모드" keeps every session to the strictest policy for at most 2 hours' in words
    assert "Not offered" not in words
