"""Hardening, part 1 (issue 17, items 1-8): leaks and data loss found by attacking main as
an adversary, a careless admin and a power cut would. Each test failed on 14d8707."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.values import KeyringKind, Purpose

from support import (
    ROOT,
    WORDS,
    MicAgent,
    Retention,
    audit_types,
    edge_agent,
    keystore_rows,
    openable,
    play,
    record,
    run_sealed,
    sessions_of,
    status,
)


@pytest.fixture
def clip(speech):
    return speech.join(speech.say(WORDS[0]), 1.0, speech.say(WORDS[1]), 1.0)


# -- 1. transcripts never reach the journal -------------------------------------------------


@pytest.mark.mic
def test_a_service_run_prints_no_transcript(virtual_mic, write_config, speech):
    """The unit's command line (`run --mic`, no --json): its whole output, as the journal
    would store it, holds no word that was said."""
    config = write_config(mode="always")
    agent = MicAgent(virtual_mic, config, "--profile", "child", as_json=False)
    play(virtual_mic, speech.join(speech.say(WORDS[0]), 1.0, speech.say(WORDS[1])))
    time.sleep(1.5)
    stdout, stderr, code = agent.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert stdout.count("session ") == 2, stdout  # it did hear and seal both
    assert "2 session(s)" in stderr
    for word in WORDS:
        assert word not in stdout + stderr


def test_json_refuses_to_write_into_the_journal_and_sessions_print_nothing_there(write_config, clip, tmp_path):
    """--json (the text) is refused into the journal; without it, a session's line (its id,
    times, length) is not written there either: the journal keeps it after the data is gone."""
    config = write_config(mode="always")
    journal = tmp_path / "journal"

    def into_journal(*extra: str) -> subprocess.CompletedProcess[str]:
        with journal.open("w") as stdout:
            info = os.fstat(stdout.fileno())
            return subprocess.run(
                [sys.executable, "-m", "edge", "--config", str(config), "run", "--input", str(clip), *extra],
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env={**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"},
            )

    ran = into_journal("--json")
    assert ran.returncode == 2 and "journal" in ran.stderr and "Traceback" not in ran.stderr
    assert journal.read_text() == ""
    ran = into_journal()
    assert ran.returncode == 0, ran.stderr
    assert journal.read_text() == "" and "2 session(s)" in ran.stderr  # heard and sealed: only the run's count is said
    assert ran.stderr.count("session") == 1, ran.stderr
    piped = edge_agent("--config", str(config), "run", "--input", str(clip), "--json", env={"JOURNAL_STREAM": "1:2"})
    assert piped.returncode == 0 and WORDS[0] in piped.stdout  # a pipe a person asked for gets the text


# -- 2. the demo never touches a household ----------------------------------------------------


def test_the_demo_leaves_a_household_with_a_file_vault_alone(write_config, clip, tmp_path):
    config = write_config(mode="always", vault=f'backend = "file"\npath = "{tmp_path / "root.key"}"')
    kept = record(config, clip)
    key = (tmp_path / "root.key").read_bytes()
    demo = edge_agent("--config", str(config), "demo", timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert "Demo over" in demo.stdout
    assert (tmp_path / "root.key").read_bytes() == key
    assert sessions_of(config) == kept  # the household's sessions still open


# -- 3. a root key that is not visible is not a lost root key ----------------------------------


def _unchanged_after(config: Path, *command: str, env: dict | None = None, expect: str) -> subprocess.CompletedProcess:
    data = config.parent / "data"
    before = keystore_rows(data)
    result = edge_agent("--config", str(config), *command, env=env)
    assert result.returncode == 1 and expect in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert keystore_rows(data) == before
    assert "root.lost" not in audit_types(data)
    return result


NEW_SESSION_KEYRING = (
    "import sys; from edge.crypto import keyring; keyring.join_new_session_keyring(); "
    "from edge.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_another_keyring_session_cannot_wipe_the_data(write_config, clip):
    config = write_config(mode="always")
    kept = record(config, clip)
    data = config.parent / "data"
    before = keystore_rows(data)
    for command in (["status"], ["purge"]):
        other = subprocess.run(
            [sys.executable, "-c", NEW_SESSION_KEYRING, "--config", str(config), *command],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert other.returncode == 1 and "session keyring" in other.stderr, other.stderr
        assert keystore_rows(data) == before and "root.lost" not in audit_types(data)
    assert sessions_of(config) == kept


def test_another_user_cannot_wipe_the_data(write_config, clip):
    """The folder's root is in the keyring of uid 65534 (the service user, say): root
    running `status`, `purge` or even the agent cannot see it, and must not call it lost."""
    from edge.crypto.vault import KeyringVault

    config = write_config(mode="always")
    record(config, clip)
    data = config.parent / "data"
    marker = json.loads((data / "vault").read_text())
    KeyringVault(data, KeyringKind.SESSION).erase("current")  # it lives in that user's keyring, not ours
    (data / "vault").write_text(json.dumps({**marker, "uid": 65534}))
    _unchanged_after(config, "status", expect="uid 65534")
    _unchanged_after(config, "purge", expect="uid 65534")
    _unchanged_after(config, "run", "--input", str(clip), expect="uid 65534")


def test_a_key_of_the_same_name_in_this_users_keyring_is_not_taken_for_anothers(write_config, clip):
    """The marker names uid 65534, and root's own keyring still holds a key of the same name
    (an earlier install ran as root): root is told whose keyring holds the root, never that
    the keystore is damaged, and nothing is changed."""
    config = write_config(mode="always")
    record(config, clip)
    data = config.parent / "data"
    marker = json.loads((data / "vault").read_text())
    (data / "vault").write_text(json.dumps({**marker, "uid": 65534}))
    _unchanged_after(config, "status", expect="uid 65534")
    _unchanged_after(config, "run", "--input", str(clip), expect="uid 65534")
    assert json.loads((data / "vault").read_text())["uid"] == 65534


def test_a_moved_data_folder_keeps_its_key(write_config, clip, tmp_path):
    config = write_config(mode="always")
    kept = record(config, clip)
    shutil.move(tmp_path / "data", tmp_path / "moved")
    config.write_text(config.read_text().replace(f'"{tmp_path / "data"}"', f'"{tmp_path / "moved"}"'))
    result = status(config)
    assert result.returncode == 0, result.stderr
    assert [s["session"] for s in json.loads(result.stdout)["sessions"]] == kept


def test_after_a_power_cut_only_the_agent_records_the_loss(write_config, clip):
    from edge.crypto.vault import KeyringVault

    config = write_config(mode="always")
    record(config, clip)
    data = config.parent / "data"
    marker = json.loads((data / "vault").read_text())
    KeyringVault(data, KeyringKind.SESSION).erase("current")  # the kernel keyring is empty after a restart...
    (data / "vault").write_text(json.dumps({**marker, "boot": "0" * 36}))  # ...and the boot id is new
    before = keystore_rows(data)
    shown = status(config)
    assert shown.returncode == 0 and "restarted" in json.loads(shown.stdout)["root_lost"]
    _unchanged_after(config, "purge", expect="agent records the loss")
    assert keystore_rows(data) == before
    agent = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "child")
    assert agent.returncode == 0 and "root key was gone" in agent.stderr
    assert audit_types(data).count("root.lost") == 1
    assert edge_agent("--config", str(config), "audit", "verify").returncode == 0


# -- 4. a forget interrupted by a crash is finished by the next command ------------------------


@pytest.mark.parametrize("selector", [["--all"], ["--session", "FIRST"]])
def test_a_forget_killed_in_the_ratchet_is_finished(write_config, clip, tmp_path, selector):

    from edge.config import load_config
    from edge.store.keystore import Keystore
    from edge.wiring import open_vault

    config = write_config(mode="always")
    first, second = record(config, clip)
    data = tmp_path / "data"
    image = tmp_path / "image"
    shutil.copytree(data, image)  # a forensic copy of the card before the forget
    args = [first if part == "FIRST" else part for part in selector]
    killed = edge_agent("--config", str(config), "forget", *args, "--yes", env={"EDGE_CRASH_AT": "ratchet.staged:1"})
    assert killed.returncode == -signal.SIGKILL
    after = edge_agent("--config", str(config), "purge")  # the next command finishes it
    assert after.returncode == 0, after.stderr
    gone = [first, second] if selector == ["--all"] else [first]
    assert sessions_of(config) == [s for s in (first, second) if s not in gone]
    settings = load_config(config)
    store = Keystore(data, open_vault(settings.vault, data))
    for session in gone:
        old = [image / "recordings" / f"{session}.wav.age", image / "transcripts" / f"{session}.json.age"]
        assert openable(store, old) == [False, False]
    verified = edge_agent("--config", str(config), "audit", "verify")
    assert verified.returncode == 0, verified.stdout
    again = edge_agent("--config", str(config), "forget", *args, "--yes")
    assert "no retained session" in again.stderr or "nothing to forget" in again.stdout


# -- 5. links and foreign files in the data folder ------------------------------------------------


def test_a_recordings_link_is_refused_and_its_target_untouched(write_config, clip, tmp_path):
    config = write_config(mode="always")
    record(config, clip)
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    (victim / "important.txt").write_text("not edge's")
    data = tmp_path / "data"
    shutil.rmtree(data / "recordings")
    (data / "recordings").symlink_to(victim)
    purge = edge_agent("--config", str(config), "purge")
    assert purge.returncode == 1 and "symbolic link" in purge.stderr and "Traceback" not in purge.stderr
    run = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "child")
    assert run.returncode == 1 and "symbolic link" in run.stderr
    assert sorted(os.listdir(victim)) == ["important.txt"]
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755


def test_a_lock_link_is_refused(write_config, clip, tmp_path):
    config = write_config(mode="always")
    record(config, clip)
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    victim.chmod(0o644)
    data = tmp_path / "data"
    (data / "lock").unlink()
    (data / "lock").symlink_to(victim)
    purge = edge_agent("--config", str(config), "purge")
    assert purge.returncode == 1 and "symbolic link" in purge.stderr
    assert victim.read_text() == "x" and stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_a_data_folder_that_is_not_edges_is_refused(write_config, clip, tmp_path):
    config = write_config(mode="always")
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("a parent's notes")
    for command in (["status"], ["run", "--input", str(clip)], ["purge"]):
        result = edge_agent("--config", str(config), *command)
        assert result.returncode == 1 and "'notes.txt'" in result.stderr and "folder of its own" in result.stderr
    assert sorted(os.listdir(data)) == ["notes.txt"]


# -- 6. a stale temporary root key is destroyed ----------------------------------------------


def test_a_root_key_left_by_a_crashed_swap_is_destroyed(write_config, speech, tmp_path):
    """kill -9 while the file vault swaps its root leaves ".root.key.PID.tmp": the next
    command destroys it, so after later shreds it opens no old keystore copy."""
    from cryptography.exceptions import InvalidTag

    from edge.store.rows import RootKeys

    def opens(root: bytes, state_row: bytes) -> bool:
        try:
            return bool(RootKeys(root).open_state(state_row))
        except InvalidTag:
            return False

    keys = tmp_path / "keys"
    config = write_config(mode="always", vault=f'backend = "file"\npath = "{keys / "root.key"}"')
    data = tmp_path / "data"
    one = speech.join(speech.say(WORDS[0]), 1.0)
    record(config, one)
    template = tmp_path / "template"
    shutil.copytree(data, template / "data")
    shutil.copytree(keys, template / "keys")
    for hit in range(1, 12):  # the hit at which the root file itself is in its temp file
        for name in ("data", "keys"):
            shutil.rmtree(tmp_path / name)
            shutil.copytree(template / name, tmp_path / name)
        killed = edge_agent("--config", str(config), "forget", "--all", "--yes", env={"EDGE_CRASH_AT": f"replace.temp:{hit}"})
        stale = [p for p in keys.iterdir() if p.name.startswith(".root.key.") and p.name[len(".root.key.") : -len(".tmp")].isdigit()]
        if killed.returncode == -signal.SIGKILL and stale and opens(stale[0].read_bytes(), _state_row(data)):
            break  # a temporary root file that opens the keystore as it is on disk
    else:
        pytest.fail("no crash left a temporary root key file that opens the keystore: the test proved nothing")
    old_state = _state_row(data)
    assert edge_agent("--config", str(config), "purge").returncode == 0
    assert not list(keys.glob(".root.key.*.tmp")) and not list(data.glob(".keystore*.tmp"))
    record(config, one)
    assert edge_agent("--config", str(config), "forget", "--all", "--yes").returncode == 0  # a later shred
    for leftover in keys.iterdir():
        assert not opens(leftover.read_bytes(), old_state)


# -- 7. exports into hostile places ---------------------------------------------------------


@pytest.fixture
def kept(write_config, clip):
    config = write_config(mode="always")
    return config, record(config, clip)[0]


def _export(config: Path, session: str, *target: str) -> subprocess.CompletedProcess:
    return edge_agent("--config", str(config), "export", "--session", session, *target)


def test_a_planted_partial_file_never_owns_the_plaintext(load, model, speech, tmp_path):

    from edge.audit.log import AuditLog
    from edge.store.export import export_audio

    config = load(mode="always")
    records, store = run_sealed(config, model, speech.join(speech.say(WORDS[0]), 1.0), "child")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    planted = shared / f".x.wav.{os.getpid()}.partial"  # another user's file, where edge's temp file goes
    planted.write_bytes(b"mine")
    os.chown(planted, 65534, 65534)
    planted.chmod(0o666)
    out = shared / "x.wav"
    export_audio(store, AuditLog(config.device.data_dir), config, records[0].session, out, Purpose.PLAYBACK, datetime.now(timezone.utc))
    info = out.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.geteuid(), 0o600)
    assert planted.read_bytes() == b"mine" and planted.stat().st_uid == 65534


def test_identity_out_never_lands_in_an_open_file_or_through_a_link(kept, tmp_path):
    config, session = kept
    existing = tmp_path / "id.txt"
    existing.write_text("")
    existing.chmod(0o644)
    refused = _export(config, session, "--identity-out", str(existing))
    assert refused.returncode == 2 and "exists already" in refused.stderr and existing.read_text() == ""
    target = tmp_path / "target.txt"
    target.write_text("")
    (tmp_path / "link").symlink_to(target)
    linked = _export(config, session, "--identity-out", str(tmp_path / "link"))
    assert linked.returncode == 2 and "symbolic link" in linked.stderr and target.read_text() == ""
    fresh = _export(config, session, "--identity-out", str(tmp_path / "new.txt"))
    assert fresh.returncode == 0 and stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o600


def test_export_out_refuses_fifos_links_devices_and_the_data_folder(kept, tmp_path):
    config, session = kept
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = tmp_path / "target.wav"
    target.write_bytes(b"")
    (tmp_path / "link.wav").symlink_to(target)
    data = tmp_path / "data"
    before = {p: p.read_bytes() for p in (data / "recordings").iterdir()}
    for out, reason in (
        (fifo, "not a regular file"),
        (Path("/dev/null"), "not a regular file"),
        (tmp_path / "link.wav", "symbolic link"),
        (data / "recordings" / f"{session}.wav.age", "inside the data folder"),
        (data / "x.wav", "inside the data folder"),
    ):
        result = _export(config, session, "--out", str(out), "--purpose", "playback")
        assert result.returncode == 2 and reason in result.stderr, (out, result.stderr)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and (tmp_path / "link.wav").is_symlink() and target.read_bytes() == b""
    assert {p: p.read_bytes() for p in (data / "recordings").iterdir()} == before and not (data / "x.wav").exists()


# -- 8. a root-run command keeps the folder the service user's ---------------------------------


def _owners(folder: Path) -> set[tuple[int, int]]:
    return {(p.lstat().st_uid, p.lstat().st_gid) for p in [folder, *folder.rglob("*")]}


def test_commands_run_as_root_keep_the_folder_the_service_users(write_config, clip, tmp_path):
    assert os.geteuid() == 0, "this test needs root (CI runs as root)"
    config = write_config(mode="always", child=Retention("child", "2s", "7d"))
    first, second = record(config, clip)
    data = tmp_path / "data"
    for path in [data, *data.rglob("*")]:
        os.lchown(path, 65534, 65534)  # as if the service user (not root) made it
    time.sleep(2.5)
    assert "shredded audio bucket" in edge_agent("--config", str(config), "purge").stdout  # root, with work to do
    assert _export(config, first, "--identity-out", str(tmp_path / "id")).returncode == 1  # audio gone: refused
    assert edge_agent("--config", str(config), "forget", "--session", first, "--yes").returncode == 0
    assert _owners(data) == {(65534, 65534)}


def test_an_unchanged_keystore_is_never_rewritten(write_config, clip, tmp_path):
    config = write_config(mode="always")
    session = record(config, clip)[0]
    keystore = tmp_path / "data" / "keystore.db"
    before = (keystore.read_bytes(), keystore.stat().st_ino)
    for command in (
        ["status"],
        ["purge"],
        ["audit", "verify"],
        ["export", "--session", session, "--out", str(tmp_path / "x.wav"), "--purpose", "playback"],
        ["purge"],
    ):
        assert edge_agent("--config", str(config), *command).returncode == 0, command
        assert (keystore.read_bytes(), keystore.stat().st_ino) == before, command
        assert not (tmp_path / "data" / "keystore.db-wal").exists()  # at rest, one file


def _state_row(data: Path) -> bytes:
    import sqlite3
    from contextlib import closing

    at_rest = not (data / "keystore.db-wal").exists()
    with closing(sqlite3.connect(f"file:{data / 'keystore.db'}?mode=ro{'&immutable=1' if at_rest else ''}", uri=True)) as db:
        return db.execute("SELECT value FROM meta WHERE name = 'state'").fetchone()[0]
