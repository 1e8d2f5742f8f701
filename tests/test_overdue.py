"""`purge --overdue`: the installed timer's second path to shredding, independent of the agent.

Real parts throughout: sessions recorded by the real agent from real speech, the real command
line (its clock moved with libfaketime), a real agent on the virtual microphone frozen with
SIGSTOP (a hung agent) while what it recorded passes its expiry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from support import MicAgent, Retention, audit_types, edge_agent, faketime, play, record, status, wait_for

ISSUE = "the agent had not shredded"


def _state(*places: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every name under these places with its inode, mode, mtime, ctime and content: what
    "nothing was written" means (a read may change only access times)."""
    seen: dict[str, tuple[int, int, int, str]] = {}
    for place in places:
        for path in [place, *sorted(place.rglob("*"))] if place.is_dir() else [place]:
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
            seen[str(path)] = (info.st_ino, info.st_mode, info.st_mtime_ns + info.st_ctime_ns, digest)
    return seen


def _shreds(data: Path) -> list[dict]:
    entries = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
    return [entry["fields"] for entry in entries if entry["type"] == "shred"]


def test_only_what_is_past_due_by_more_than_the_margin_is_shredded_and_a_look_writes_nothing(write_config, speech, tmp_path):
    config = write_config(mode="always")
    slow = write_config("slow.toml", mode="always", sweep="15m")  # the same folder, an agent that sweeps every 15 minutes
    data = tmp_path / "data"
    (session,) = record(config, speech.say("메시지"))  # child: audio kept 1 h, transcript 7 d
    expires = datetime.fromisoformat(json.loads(status(config).stdout)["sessions"][0]["audio_expires"])

    def purge(late: timedelta, margin: str, config: Path = config) -> tuple[str, str, int]:
        """`purge --overdue MARGIN` run when the recording is `late` past due."""
        offset = math.ceil((expires + late - datetime.now(timezone.utc)).total_seconds())  # never less late than asked
        ran = faketime(f"{offset:+d}s", "--config", str(config), "purge", "--overdue", margin, config=config)
        return ran.stdout, ran.stderr, ran.returncode

    before = _state(tmp_path)
    assert purge(timedelta(minutes=10), "15m") == ("", "", 0)
    assert purge(timedelta(minutes=20), "1s", slow) == ("", "", 0)  # never less than two of the agent's sweeps
    assert _state(tmp_path) == before  # no audit line, no clock mark, no lock file: nothing at all
    assert (data / "recordings" / f"{session}.wav.age").exists()

    out, err, code = purge(timedelta(minutes=20), "10m")
    assert code == 0, err
    assert err.count(ISSUE) == 1 and "1 bucket(s) more than 10m past due: purge --overdue did" in err
    assert f"shredded audio bucket child.audio.{expires:%Y%m%dT%H%M%SZ}: 1 session(s), expired, late by" in out
    assert not (data / "recordings" / f"{session}.wav.age").exists()
    assert (data / "transcripts" / f"{session}.json.age").exists()  # kept 7 days: not due
    (shred,) = _shreds(data)
    assert shred["backstop"] is True and shred["sessions"] == [session] and 1200 <= shred["late_seconds"] < 1260
    verified = edge_agent("--config", str(config), "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_bad_margin_is_refused_and_a_folder_never_used_stays_unmade(write_config, tmp_path):
    config = write_config()
    bad = edge_agent("--config", str(config), "purge", "--overdue", "ten minutes")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("edge-agent: --overdue 'ten minutes': must be a whole number and a unit") and "Traceback" not in bad.stderr
    quiet = edge_agent("--config", str(config), "purge", "--overdue", "10m")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert not (tmp_path / "data").exists()


def _unlocked(data: Path) -> bool:
    """Whether nobody holds the data folder's lock now."""
    fd = os.open(data / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also releases it
    return True


def test_what_a_hung_agent_recorded_is_shredded_beside_it_and_the_agent_carries_on(virtual_mic, speech, write_config, tmp_path):
    """The agent records a child's session, then hangs (SIGSTOP) with the data folder open:
    once the session is past due by more than the margin, `purge --overdue` shreds it beside
    the hung agent (the data-folder lock takes turns), says the agent had not, and the agent,
    woken up, carries on and stops cleanly; the log verifies."""
    config = write_config(mode="always", child=Retention("child", "20s", "20s"), sweep="1s")
    data = tmp_path / "data"
    agent = MicAgent(virtual_mic, config, "--profile", "child")
    try:
        play(virtual_mic, speech.say("메시지"))
        assert wait_for(lambda: "session.sealed" in audit_types(data), 30), agent.stderr
        (session,) = json.loads(status(config).stdout)["sessions"]  # (status asks the agent too: not once it hangs)
        expires = datetime.fromisoformat(session["audio_expires"])
        recording = data / "recordings" / f"{session['session']}.wav.age"
        for _attempt in range(50):  # hang it while it holds no lock (it sweeps every second)
            agent.process.send_signal(signal.SIGSTOP)
            if _unlocked(data):
                break
            agent.process.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        else:
            raise AssertionError("the agent never let go of the data folder's lock")
        assert expires > datetime.now(timezone.utc), "the agent hung too late for this test"
        assert recording.exists()

        early = edge_agent("--config", str(config), "purge", "--overdue", "5s")
        assert (early.returncode, early.stdout, early.stderr) == (0, "", "")  # not yet overdue: nothing done
        time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 6)  # 5 s past due, and then some
        late = edge_agent("--config", str(config), "purge", "--overdue", "5s")
        assert late.returncode == 0, late.stderr
        assert late.stderr.count(ISSUE) == 1 and "2 bucket(s) more than 5s past due" in late.stderr
        assert not recording.exists() and not (data / "transcripts" / f"{session['session']}.json.age").exists()
        assert {(s["kind"], s["backstop"]) for s in _shreds(data)} == {("audio", True), ("transcript", True)}
        agent.process.send_signal(signal.SIGCONT)
    except BaseException:
        agent.process.kill()
        agent.process.wait()
        raise
    time.sleep(2)  # its own sweeps find nothing left to do
    records, stderr, code = agent.stop()
    assert code == 0, stderr
    assert [r["session"] for r in records] == [session["session"]]
    assert "sweep failed" not in stderr and "Traceback" not in stderr
    assert [s["backstop"] for s in _shreds(data)] == [True, True]  # the agent shredded nothing twice
    assert json.loads(status(config).stdout)["sessions"] == []
    verified = edge_agent("--config", str(config), "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
