"""Hardening, part 2 (issue 17, items 9-19): policy, verifiability and robustness found by
attacking main. Each test failed on 14d8707."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge import wiring
from edge.values import TagRule

from support import ROOT, WORDS, MicAgent, Retention, deleted_and_rechained, edge_agent, forget_in_a_terminal, play, record, status


@pytest.fixture
def clip(speech):
    return speech.join(speech.say(WORDS[0]), 1.0, speech.say(WORDS[1]), 1.0)


# -- 9. the strictest policy is strict in every kind -------------------------------------------


def test_an_unknown_speaker_is_kept_no_longer_than_any_profile_keeps_either_kind(write_config, clip):
    config = write_config(mode="always", parent=Retention("adult", "0s", "365d"), child=Retention("child", "1h", "1d"))
    record(config, clip, profile=None)
    now = datetime.now(timezone.utc)
    for session in json.loads(status(config).stdout)["sessions"]:
        assert (session["profile"], session["rule"], session["child"]) == ("_unknown", "strictest", True)
        assert session["audio_expires"] is None  # the parent keeps no audio
        assert datetime.fromisoformat(session["transcript_expires"]) <= now + timedelta(days=1)  # the child's 1d


def test_the_strictest_policy_never_exceeds_the_child_caps(load):
    from edge.policy import strictest_policy
    from edge.tagging import tag_session

    config = load(household='max_child_audio = "2h"\nmax_child_transcript = "7d"')
    adults_only = replace(config, profiles=(config.profile("parent"),))  # 24h / 30d
    policy = strictest_policy(adults_only)
    assert (policy.keep_audio, policy.keep_transcript, policy.allow_training) == (timedelta(hours=2), timedelta(days=7), False)
    assert tag_session(config).profile.name == "child"  # one profile is strictest in both: it is used


# -- 10. `edge-agent profile` beats the run's --profile ----------------------------------------


@pytest.mark.mic
def test_the_active_profile_overrides_the_given_one(virtual_mic, write_config, speech):
    config = write_config(mode="always")
    agent = MicAgent(virtual_mic, config, "--profile", "parent")
    env = {**virtual_mic, "EDGE_CONFIG": str(config)}
    switched = subprocess.run([sys.executable, "-m", "edge", "profile", "child"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert switched.returncode == 0 and "active profile: child" in switched.stdout, switched.stderr
    play(virtual_mic, speech.say(WORDS[0]))
    time.sleep(1.5)
    sessions, stderr, code = agent.stop()
    assert code == 0, stderr
    assert [(s["profile"], s["rule"]) for s in sessions] == [("child", "active")]


# -- 11. inactive_after holds for adults too: test_retention.py::test_inactive_profile_is_shredded[parent]


# -- 12. a forget waiting for its answer holds no lock -----------------------------------------


def test_an_open_forget_prompt_does_not_block_the_device(write_config, clip):
    config = write_config(mode="always")
    record(config, clip)
    prompt, controller = forget_in_a_terminal(config, "--all")
    try:
        time.sleep(3)  # the question is on the screen; nobody answers yet
        started = time.monotonic()
        purge = edge_agent("--config", str(config), "purge", timeout=20)
        assert purge.returncode == 0 and time.monotonic() - started < 15
    finally:
        os.write(controller, b"n\n")
        out, _err = prompt.communicate(timeout=30)
        os.close(controller)
    assert "nothing was forgotten" in out and len(json.loads(status(config).stdout)["sessions"]) == 2


# -- 13. durations are bounded ---------------------------------------------------------------


def test_an_absurd_retention_is_a_config_error(write_config, clip):
    config = write_config(mode="always", parent=Retention("adult", "9999999d", "30d"))  # the parent: no child cap applies
    result = edge_agent("--config", str(config), "run", "--input", str(clip), "--profile", "parent")
    assert result.returncode == 1 and "profiles.parent.keep_audio" in result.stderr and "3650d" in result.stderr
    assert "Traceback" not in result.stderr


# -- 14. what verify checks ----------------------------------------------------------------------


def test_a_line_deleted_from_the_middle_and_rechained_is_caught(write_config, clip, tmp_path):
    """Someone hides an export of a child's audio: its line deleted, the rest re-hashed
    (the hashes are unkeyed), the checkpoints that no longer verify dropped."""
    config = write_config(mode="always")
    session = record(config, clip)[0]
    exported = edge_agent(
        "--config", str(config), "export", "--session", session, "--out", str(tmp_path / "x.wav"), "--purpose", "playback"
    )
    assert exported.returncode == 0, exported.stderr
    record(config, clip)
    log = config.parent / "data" / "audit.jsonl"
    lines = log.read_bytes().splitlines()
    middle = next(i for i, line in enumerate(lines, start=1) if b'"type":"export"' in line)
    log.write_bytes(b"".join(line + b"\n" for line in deleted_and_rechained(lines, middle - 1)))
    verified = edge_agent("--config", str(config), "audit", "verify")
    assert verified.returncode == 1 and "checkpoint" in verified.stdout and "line " in verified.stdout, verified.stdout


def test_shreds_of_a_forget_name_their_sessions(write_config, clip):
    config = write_config(mode="always")
    sessions = record(config, clip)
    assert edge_agent("--config", str(config), "forget", "--all", "--yes").returncode == 0
    shreds = [
        json.loads(line)["fields"]
        for line in (config.parent / "data" / "audit.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "shred"
    ]
    assert len(shreds) == 2 and all(sorted(s["sessions"]) == sorted(sessions) for s in shreds)


def test_a_refused_export_of_expired_audio_is_audited(write_config, clip, tmp_path):
    config = write_config(mode="always", child=Retention("child", "2s", "7d"))
    session = record(config, clip)[0]
    time.sleep(2.5)  # expired; no sweep has run yet
    refused = edge_agent("--config", str(config), "export", "--session", session, "--out", str(tmp_path / "x.wav"), "--purpose", "playback")
    assert refused.returncode == 1 and "expired" in refused.stderr and not (tmp_path / "x.wav").exists()
    events = [json.loads(line) for line in (config.parent / "data" / "audit.jsonl").read_text().splitlines()]
    assert [e["fields"] for e in events if e["type"] == "export.refused"] == [
        {"session": session, "purpose": "playback", "reason": "expired"}
    ]


def test_an_edited_witness_is_caught_by_its_signature(write_config, clip, tmp_path):
    config = write_config(mode="always")
    record(config, clip)
    witness = tmp_path / "witness"
    assert edge_agent("--config", str(config), "audit", "checkpoint", "--out", str(witness)).returncode == 0
    text = witness.read_text().splitlines()
    entries = int(text[2].split()[1])
    witness.write_text("\n".join([*text[:2], f"entries {entries + 1000}", text[3]]) + "\n")  # the .sig is kept
    verified = edge_agent("--config", str(config), "audit", "verify", "--witness", str(witness))
    assert verified.returncode == 1 and "signature does not match" in verified.stdout and "truncated" not in verified.stdout


# -- 15. tampered lines never crash a command -----------------------------------------------------


@pytest.mark.parametrize("audio_expires", ["yesterday", 5, "2026-11-01T00:00:00"])
def test_a_chain_valid_line_with_a_bad_date_is_a_problem_not_a_crash(write_config, clip, tmp_path, audio_expires):
    from edge.audit.log import AuditLog
    from edge.events import SessionCreated

    config = write_config(mode="always")
    record(config, clip)
    data = config.parent / "data"
    forged = SessionCreated("feedfeedfeedfeed", "child", "given", True, audio_expires, None, "child.audio.x", None)  # not type-checked
    AuditLog(data).append(forged)  # the hashes are unkeyed: anyone can chain a well-formed line
    line = len((data / "audit.jsonl").read_text().splitlines())
    verified = edge_agent("--config", str(config), "audit", "verify")
    assert verified.returncode == 1 and f"line {line}" in verified.stdout, verified.stdout
    for command in (
        ["audit", "report", "--html", str(tmp_path / "report.html")],
        ["audit", "show", "--since", "2020-01-01"],
        ["run", "--input", str(clip), "--profile", "child"],
        ["status"],
    ):
        result = edge_agent("--config", str(config), *command)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr)


# -- 16. the age reader ---------------------------------------------------------------------------


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


@pytest.mark.parametrize("share", [bytes(32), (1).to_bytes(32, "little")])
def test_a_low_order_share_is_the_one_opaque_error(share):
    from edge.crypto.age import Identity, decrypt
    from edge.errors import AgeError

    header = b"age-encryption.org/v1\n-> X25519 " + _b64(share) + b"\n" + _b64(bytes(32)) + b"\n--- " + _b64(bytes(32)) + b"\n"
    with pytest.raises(AgeError) as caught:
        decrypt(header + bytes(16) + bytes(32), [Identity.generate()])
    assert str(caught.value) == str(AgeError())


def test_an_scrypt_stanza_beside_another_is_a_header_failure():
    from edge.crypto.age import Identity, _hkdf, decrypt, encrypt, read_header, unwrap_file_key
    from edge.errors import AgeError

    identity = Identity.generate()
    sealed = encrypt(b"hello", identity.recipient)
    source = io.BytesIO(sealed)
    header = read_header(source)
    payload = sealed[source.tell() :]
    file_key = unwrap_file_key(header, [identity])
    x25519 = header.signed.split(b"\n")[1:-1]  # the stanza lines, between the version line and "---"
    scrypt = [b"-> scrypt " + _b64(b"saltsaltsaltsalt") + b" 10", _b64(bytes(32))]
    signed = b"\n".join([b"age-encryption.org/v1", *x25519, *scrypt, b"---"])
    mac = hmac.new(_hkdf(file_key, b"", b"header"), signed, hashlib.sha256).digest()
    mixed = signed + b" " + _b64(mac) + b"\n" + payload
    with pytest.raises(AgeError):
        decrypt(mixed, [identity])


# -- 17. the control socket ---------------------------------------------------------------------


def test_a_slow_client_holds_nobody_up_and_is_cut_off(tmp_path):
    from edge.control.protocol import CLIENT_TIMEOUT, ControlServer, call

    server = ControlServer(tmp_path / "c.sock", {"status": lambda args: {"alive": True}})
    server.start()
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        slow.connect(str(server.path))
        started = time.monotonic()

        def drip() -> None:  # one byte every half second: each read is quick, the request never ends
            for _ in range(30):
                try:
                    slow.send(b" ")
                except OSError:
                    return
                time.sleep(0.5)

        threading.Thread(target=drip, daemon=True).start()
        time.sleep(0.3)
        asked = time.monotonic()
        assert call(server.path, "status")["alive"] is True
        assert time.monotonic() - asked < 2  # served beside the slow client
        slow.settimeout(20)
        try:
            assert slow.recv(100) == b""
        except ConnectionResetError:
            pass
        assert CLIENT_TIMEOUT - 1 < time.monotonic() - started < CLIENT_TIMEOUT + 2
    finally:
        slow.close()
        server.stop()


def test_an_op_that_is_not_a_string_is_refused_by_name():
    from edge.control.protocol import parse_request
    from edge.errors import ControlError

    for raw in (b'{"op": ["status"]}', b'{"op": {"a": 1}}', b'{"op": 7}'):
        with pytest.raises(ControlError, match="unknown op"):
            parse_request(raw)


# -- 18. model fetch -----------------------------------------------------------------------------


MODEL = {"vosk-model-tiny/am/final.mdl": b"acoustic", "vosk-model-tiny/conf/model.conf": b"--x=1\n"}


@pytest.fixture
def site(tmp_path):
    """A folder served over loopback HTTP: (folder, base URL)."""
    import http.server

    folder = tmp_path / "site"
    folder.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _fetch(url: str, archive: bytes | Path, dest: Path):
    from edge.stt.fetch import fetch_model

    body = archive.read_bytes() if isinstance(archive, Path) else archive
    return fetch_model(url, hashlib.sha256(body).hexdigest(), dest)


def test_a_tar_made_with_dot_installs(site, tmp_path):
    folder, base = site
    source = tmp_path / "src"
    for name, data in MODEL.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    subprocess.run(["tar", "-C", str(source), "-czf", str(folder / "m.tar.gz"), "."], check=True)
    fetched = _fetch(f"{base}/m.tar.gz", folder / "m.tar.gz", tmp_path / "models")
    assert fetched.path == tmp_path / "models" / "vosk-model-tiny" and (fetched.path / "am" / "final.mdl").read_bytes() == b"acoustic"


def _zip_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        warnings.simplefilter("ignore")  # a duplicate name is the point of one case
        for name, data in members:
            bundle.writestr(name, data)
    return buffer.getvalue()


def _patched(raw: bytes, local_offset: int, central_offset: int, value: int) -> bytes:
    """Set a 2-byte field in every local header and central directory entry."""
    data = bytearray(raw)
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        at = data.find(signature)
        while at >= 0:
            data[at + offset : at + offset + 2] = value.to_bytes(2, "little")
            at = data.find(signature, at + 4)
    return bytes(data)


@pytest.mark.parametrize(
    "archive, problem",
    [
        (_zip_bytes([*MODEL.items(), ("vosk-model-tiny/am/final.mdl", b"again")]), "appears twice"),
        (_zip_bytes([("vosk-model-tiny/am", b"a file"), ("vosk-model-tiny/am/final.mdl", b"x")]), "clashes"),
        (_patched(_zip_bytes(list(MODEL.items())), 6, 8, 0x1), "cannot be unpacked"),  # encrypted
        (_patched(_zip_bytes(list(MODEL.items())), 8, 10, 9), "cannot be unpacked"),  # deflate64
    ],
    ids=["duplicate", "file-where-a-folder-belongs", "encrypted", "deflate64"],
)
def test_odd_archives_are_refused_with_a_reason(site, tmp_path, archive, problem):
    from edge.errors import ModelError

    folder, base = site
    (folder / "m.zip").write_bytes(archive)
    with pytest.raises(ModelError, match=problem):
        _fetch(f"{base}/m.zip", archive, tmp_path / "models")
    assert [p.name for p in (tmp_path / "models").iterdir()] == []


@contextmanager
def raw_http(response: bytes):
    """A loopback 'server' that answers every request with these bytes, then hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(response)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/m.zip"
    finally:
        server.close()


@pytest.mark.parametrize(
    "response",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + b"x" * 10,
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n",
    ],
    ids=["bad-status-line", "cut-chunked-body", "too-many-headers"],
)
def test_a_broken_server_is_a_clear_error(tmp_path, response):
    from edge.errors import ModelError

    with raw_http(response) as url, pytest.raises(ModelError, match="nothing was installed"):
        _fetch(url, b"", tmp_path / "models")


def test_fetched_models_are_readable_by_the_service_user(site, tmp_path):
    folder, base = site
    archive = _zip_bytes(list(MODEL.items()))
    (folder / "m.zip").write_bytes(archive)
    dest = tmp_path / "a" / "b" / "models"
    result = edge_agent("model", "fetch", "--url", f"{base}/m.zip", "--sha256", hashlib.sha256(archive).hexdigest(), "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    for created in (tmp_path / "a", tmp_path / "a" / "b", dest, dest / "vosk-model-tiny"):
        assert created.stat().st_mode & 0o777 == 0o755, created


# -- 19. odds and ends -------------------------------------------------------------------------


def test_a_folder_inside_recordings_does_not_stop_purges(write_config, clip):
    config = write_config(mode="always", child=Retention("child", "2s", "7d"))
    record(config, clip)
    (config.parent / "data" / "recordings" / "lost+found").mkdir()
    time.sleep(2.5)
    purge = edge_agent("--config", str(config), "purge")
    assert purge.returncode == 0 and "shredded audio bucket" in purge.stdout, purge.stderr
    assert os.listdir(config.parent / "data" / "recordings") == ["lost+found"]


@pytest.mark.parametrize("out", ["", "/", "."])
def test_export_to_a_folder_is_a_clear_error(write_config, clip, out):
    config = write_config(mode="always")
    session = record(config, clip)[0]
    result = edge_agent("--config", str(config), "export", "--session", session, "--out", out, "--purpose", "playback")
    assert result.returncode == 2 and "folder" in result.stderr and "Traceback" not in result.stderr


def test_a_model_inside_the_data_folder_passes_the_permission_check(write_config, clip):
    config = write_config(mode="always")
    record(config, clip)
    model = config.parent / "data" / "models" / "vosk-model-x"
    (model / "am").mkdir(parents=True)
    (model / "am" / "final.mdl").write_bytes(b"x")
    for path in (model.parent, model, model / "am"):
        path.chmod(0o755)
    (model / "am" / "final.mdl").chmod(0o644)
    doctor = edge_agent("--config", str(config), "doctor", "--json", "--no-mic")
    [permissions] = [f for f in json.loads(doctor.stdout) if f["check"] == "permissions"]
    assert permissions["status"] == "ok", permissions


@pytest.mark.parametrize("command", [["status"], ["audit", "verify"], ["audit", "show"]])
def test_a_reader_that_stops_early_is_no_error(write_config, clip, command):
    config = write_config(mode="always")
    record(config, clip)
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    process.stdout.close()  # like `| head -1` exiting before edge writes
    stderr = process.communicate(timeout=60)[1].decode()
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_a_clock_file_of_another_version_is_refused(write_config, clip):
    config = write_config(mode="always")
    record(config, clip)
    clock = config.parent / "data" / "clock"
    mark = json.loads(clock.read_text())
    clock.write_text(json.dumps({**mark, "version": 2}))
    purge = edge_agent("--config", str(config), "purge")
    assert purge.returncode == 1 and "version 2" in purge.stderr and "Traceback" not in purge.stderr


def _open_fds_to(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            continue
    return count


def test_a_recording_stopped_by_a_full_disk_is_closed(small_disk, write_config):
    from edge.config import load_config
    from edge.disk.layout import recording_path
    from edge.errors import StorageError
    from edge.policy import Tag

    path = write_config(mode="always", data_dir=small_disk / "data")
    config = load_config(path)
    data = config.device.data_dir
    store, audit = wiring.open_store(config)
    sealed = wiring.make_recorder(store, audit, wiring.make_clock(config)).begin(
        "0123456789abcdef", Tag(config.profile("child"), TagRule.GIVEN)
    )
    with pytest.raises(StorageError, match="the disk is full"):
        while True:
            sealed.write(os.urandom(65536))
    assert _open_fds_to(recording_path(data, "0123456789abcdef")) == 0


def test_a_full_disk_at_the_header_is_a_clear_error(write_config, monkeypatch):
    """The disk fills exactly at the recording's header: /dev/full (every write ENOSPC) stands
    in for the file, the one boundary faked here."""
    from edge.config import load_config
    from edge.errors import StorageError
    from edge.policy import Tag
    from edge.store import recorder

    config = load_config(write_config(mode="always"))
    data = config.device.data_dir
    store, audit = wiring.open_store(config)
    monkeypatch.setattr(recorder, "create_in", lambda root, relative: open("/dev/full", "wb", buffering=0))
    with pytest.raises(StorageError, match="the disk is full"):
        wiring.make_recorder(store, audit, wiring.make_clock(config)).begin("0123456789abcdef", Tag(config.profile("child"), TagRule.GIVEN))
    assert not (data / "recordings" / "0123456789abcdef.wav.age").exists()
