"""The audit log as a C2SP transparency log: its checkpoints and proofs verify with the Go
reference code (golang.org/x/mod/sumdb/note and sumdb/tlog, built from Debian's
golang-golang-x-mod-dev, unchanged), and `audit verify --witness` takes a C2SP checkpoint
and proves the log consistent with it, or names what it is not."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.audit import merkle, note
from edge.audit.log import AuditLog, canonical, checkpoint_text, entry_hash
from edge.events import ConfigLoaded

from support import ROOT, edge_agent, record

GO_SOURCE = ROOT / "tests" / "go" / "tlogcheck"
GOPATH = Path("/usr/share/gocode")
"""Where golang-golang-x-mod-dev puts golang.org/x/mod (built offline, in GOPATH mode)."""


@pytest.fixture(scope="module")
def tlogcheck(tmp_path_factory) -> Path:
    """tests/go/tlogcheck built against the Go reference packages."""
    out = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOCACHE": str(out / "cache"), "GOFLAGS": "", "CGO_ENABLED": "0"}
    built = subprocess.run(["go", "build", "-o", str(out / "tlogcheck"), "."], cwd=GO_SOURCE, env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return out / "tlogcheck"


def go(tool: Path, *args: str | Path | int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True)


def cli(config: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return edge_agent("--config", str(config), "audit", *map(str, args))


def c2sp_checkpoint(config: Path, out: Path) -> Path:
    made = cli(config, "checkpoint", "--format", "c2sp", "--out", out)
    assert made.returncode == 0, made.stderr
    return out


def proof_file(config: Path, path: Path, *args: str | int) -> Path:
    proved = cli(config, "prove", *map(str, args))
    assert proved.returncode == 0, proved.stderr
    path.write_text(proved.stdout)
    return path


def test_a_device_checkpoint_and_its_proofs_verify_with_the_go_reference_code(write_config, speech, tlogcheck, tmp_path):
    config = write_config(mode="always")
    data_dir = config.parent / "data"
    assert len(record(config, speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0))) == 2  # a real history
    old = c2sp_checkpoint(config, tmp_path / "old.note")
    vkey = cli(config, "export-key", "--format", "note").stdout.strip()
    opened = go(tlogcheck, "open", vkey, old)
    assert opened.returncode == 0, opened.stderr
    log_id = json.loads((data_dir / "audit.jsonl").read_bytes().split(b"\n")[0])["fields"]["log"]
    lines = (data_dir / "audit.jsonl").read_bytes().splitlines()
    origin, old_size, old_root = opened.stdout.split()
    assert origin == f"edge.local/audit/{log_id}" and int(old_size) == len(lines)
    assert vkey.startswith(f"edge.local/audit/{log_id}+")
    assert json.loads(lines[-1])["type"] == "checkpoint"  # the tree head covers a log signed to its end
    assert base64.b64decode(old_root) == merkle.root([merkle.leaf_hash(line) for line in lines])

    assert cli(config, "checkpoint", "--out", tmp_path / "v1.txt").returncode == 0  # the log grows (format 1 as before)
    new = c2sp_checkpoint(config, tmp_path / "new.note")
    lines = (data_dir / "audit.jsonl").read_bytes().splitlines()
    size = len(lines)
    assert size > int(old_size)
    consistency = proof_file(config, tmp_path / "consistency", "--consistency", old_size, "--size", size)
    checked = go(tlogcheck, "consistency", vkey, old, new, consistency)
    assert checked.returncode == 0, checked.stderr
    for seq in (1, 2, int(old_size), size):
        line = tmp_path / f"line{seq}"
        line.write_bytes(lines[seq - 1] + b"\n")
        inclusion = proof_file(config, tmp_path / f"inclusion{seq}", "--inclusion", seq, "--size", size)
        checked = go(tlogcheck, "inclusion", vkey, new, line, seq, inclusion)
        assert checked.returncode == 0, (seq, checked.stderr)
        assert go(tlogcheck, "inclusion", vkey, new, line, seq % size + 1, inclusion).returncode == 1  # another line's place

    # what the reference code refuses: an edited checkpoint, a proof of another tree, an edited line
    edited = tmp_path / "edited.note"
    edited.write_bytes(new.read_bytes().replace(f"\n{size}\n".encode(), f"\n{size + 1}\n".encode()))
    assert "invalid signature for key" in go(tlogcheck, "open", vkey, edited).stderr
    assert go(tlogcheck, "consistency", vkey, new, old, consistency).returncode == 1
    line = tmp_path / "line2"
    line.write_bytes(lines[1].replace(b'"seq":2', b'"seq":3'))
    assert go(tlogcheck, "inclusion", vkey, new, line, 2, tmp_path / "inclusion2").returncode == 1
    other_key = note.verifier_key(origin, Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    assert go(tlogcheck, "open", other_key, new).returncode == 1


def test_verify_proves_a_c2sp_witness_consistent_and_names_a_cut_an_edit_and_another_log(write_config, tmp_path):
    config = write_config()
    data_dir = config.parent / "data"
    log = AuditLog(data_dir)
    for number in range(5):
        log.append(ConfigLoaded(path=f"/etc/edge/{number}.toml", sha256="0" * 64))
        log.sign()
    witness = c2sp_checkpoint(config, tmp_path / "witness.note")
    seen = len((data_dir / "audit.jsonl").read_bytes().splitlines())
    for number in range(150):  # past a checkpoint every hundred lines
        log.append(ConfigLoaded(path=f"/etc/edge/later{number}.toml", sha256="1" * 64))
    log.sign()
    ok = cli(config, "verify", "--witness", witness)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"consistent with the witness's C2SP checkpoint ({seen} entries; RFC 6962 consistency proof to" in ok.stdout

    whole = (data_dir / "audit.jsonl").read_bytes()
    lines = whole.splitlines(keepends=True)
    (data_dir / "audit.jsonl").write_bytes(b"".join(lines[: seen - 2]))  # cut just after a checkpoint: a valid, signed log
    assert json.loads(lines[seen - 3])["type"] == "checkpoint" and cli(config, "verify").returncode == 0
    cut = cli(config, "verify", "--witness", witness)
    assert cut.returncode == 1 and f"it saw {seen} entries but the log has only {seen - 2}: the log was truncated" in cut.stdout

    # with the device's own key (root on the device), line 3 edited and everything after it re-chained and re-signed:
    # a log that verifies alone, and in which every witness's tree head no longer fits
    (data_dir / "audit.jsonl").write_bytes(b"".join(_resigned(lines, 2, (data_dir / "audit.key").read_bytes())))
    assert cli(config, "verify").returncode == 0
    edited = cli(config, "verify", "--witness", witness)
    assert edited.returncode == 1 and f"the log's first {seen} entries are not those the witness saw" in edited.stdout
    (data_dir / "audit.jsonl").write_bytes(whole)

    forged = tmp_path / "forged.note"  # the witness itself edited to a smaller tree
    forged.write_bytes(witness.read_bytes().replace(f"\n{seen}\n".encode(), f"\n{seen - 1}\n".encode()))
    refused = cli(config, "verify", "--witness", forged)
    assert refused.returncode == 1 and "no signature of this log's key verifies on it" in refused.stdout

    other = write_config("other.toml", data_dir=tmp_path / "other")  # a new log begun on the device, under the same key
    (tmp_path / "other").mkdir(mode=0o700)
    (tmp_path / "other" / "audit.key").write_bytes((data_dir / "audit.key").read_bytes())
    (tmp_path / "other" / "audit.key").chmod(0o600)
    AuditLog(tmp_path / "other").append(ConfigLoaded(path="/etc/edge/x.toml", sha256="0" * 64))
    elsewhere = c2sp_checkpoint(other, tmp_path / "other.note")
    replaced = cli(config, "verify", "--witness", elsewhere)
    assert replaced.returncode == 1 and "witness: it is for log edge.local/audit/" in replaced.stdout and "(replaced?)" in replaced.stdout


def test_bad_witnesses_and_proof_requests_get_one_clear_sentence(write_config, tmp_path):
    config = write_config()
    AuditLog(config.parent / "data").append(ConfigLoaded(path="/etc/edge/a.toml", sha256="0" * 64))
    garbage = tmp_path / "garbage.note"
    garbage.write_text("hello\n\n— someone AAAA\n")
    bad = cli(config, "verify", "--witness", garbage)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "not a witness: neither an edge audit checkpoint (v1) nor a C2SP checkpoint" in bad.stderr
    size = len((config.parent / "data" / "audit.jsonl").read_bytes().splitlines())
    for args, said in (
        (("--inclusion", "0"), "--inclusion 0: not an entry of the tree of"),
        (("--inclusion", str(size + 1)), f"--inclusion {size + 1}: not an entry"),
        (("--consistency", "1", "--size", str(size + 1)), f"--size {size + 1}: the log's tree has 1 to {size} entries"),
        (("--consistency", "-1"), "--consistency -1: an older tree has 0 to"),
    ):
        refused = cli(config, "prove", *args)
        assert refused.returncode != 0 and said in refused.stderr and "Traceback" not in refused.stderr, (args, refused.stderr)
    assert cli(config, "prove", "--inclusion", "1", "--consistency", "1").returncode == 2  # one or the other
    assert "--out FILE.pem is required" in cli(config, "export-key").stderr
    empty = write_config("empty.toml", data_dir=tmp_path / "empty")
    assert "the audit log is missing or empty" in cli(empty, "prove", "--consistency", "0").stderr


def _resigned(lines: list[bytes], index: int, private: bytes) -> list[bytes]:
    """Line `index` edited, and every later line re-chained, its checkpoints re-signed with the key."""
    key = Ed25519PrivateKey.from_private_bytes(private)
    log_id = json.loads(lines[0])["fields"]["log"]
    out = lines[:index]
    for number, raw in enumerate(lines[index:], start=index):
        entry = json.loads(raw)
        previous = json.loads(out[-1])
        if number == index:
            entry["fields"]["path"] = "/etc/edge/someone-else.toml"
        if entry["type"] == "checkpoint":
            entry["fields"].update(head=previous["hash"])
            entry["fields"]["signature"] = key.sign(checkpoint_text(log_id, previous["seq"], previous["hash"])).hex()
        entry["prev"] = previous["hash"]
        entry["hash"] = entry_hash(entry)
        out.append(canonical(entry) + b"\n")
    return out
