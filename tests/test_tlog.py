"""The audit log as a C2SP transparency log: its checkpoints and proofs verify with the Go
reference code (golang.org/x/mod/sumdb/note and sumdb/tlog, built from Debian's
golang-golang-x-mod-dev, unchanged), and `audit verify --witness` takes a C2SP checkpoint
and proves the log consistent with it, or names what it is not."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.audit import merkle, note
from edge.audit.log import AuditLog, canonical, checkpoint_text, entry_hash
from edge.audit.transparency import leaves_of, tree_head
from edge.events import ConfigLoaded, WitnessCosigned

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
    for digits in ("9" * 5000, str(1 << 64)):  # past int()'s digit limit; past a uint64 (C2SP tree sizes are)
        huge = tmp_path / "huge.note"
        huge.write_text(f"edge.local/audit/0\n{digits}\n{base64.b64encode(bytes(32)).decode()}\n\n\u2014 someone AAAAAAAA\n")
        refused = cli(config, "verify", "--witness", huge)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
        assert "tree size" in refused.stderr and "not a witness" in refused.stderr
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


# -- a witness: C2SP tlog-witness on loopback ---------------------------------------------------


class LoopbackWitness:
    """A minimal C2SP tlog-witness written here from c2sp.org/tlog-witness, signed-note and
    tlog-cosignature (Ed25519, type 0x04), sharing no code with edge's log: its own note
    parsing, its own RFC 9162 consistency check, its own cosignatures."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = Ed25519PrivateKey.generate()
        public = self.key.public_key().public_bytes_raw()
        self.key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
        material = base64.b64encode(bytes([4]) + public).decode()
        self.vkey = f"{name}+{self.key_id.hex()}+{material}"
        self.logs: dict[str, bytes] = {}
        """origin -> the log's Ed25519 public key (from its vkey)"""
        self.latest: dict[str, tuple[int, bytes]] = {}
        self.answers: list[int] = []
        self.lock = threading.Lock()
        self.time: int | None = None
        """The time its cosignatures carry (None: now)."""

    def trust(self, log_vkey: str) -> None:
        name, _id, material = log_vkey.split("+", 2)
        assert base64.b64decode(material)[0] == 1
        self.logs[name] = base64.b64decode(material)[1:]

    def add_checkpoint(self, body: bytes) -> tuple[int, bytes]:
        with self.lock:  # the check of the old size and the update are one step (the spec's race)
            status, answer = self._add(body)
            self.answers.append(status)
            return status, answer

    def _add(self, body: bytes) -> tuple[int, bytes]:
        head, _, checkpoint = body.partition(b"\n\n")
        lines = head.decode().split("\n")
        if not lines[0].startswith("old "):
            return 400, b""
        old, proof = int(lines[0][4:]), [base64.b64decode(line) for line in lines[1:]]
        text, _, signatures = checkpoint.decode().rpartition("\n\n")
        text += "\n"
        origin, size_line, root_line = text.split("\n")[:3]
        if origin not in self.logs:
            return 404, b""
        public = self.logs[origin]
        wanted = hashlib.sha256(origin.encode() + b"\n\x01" + public).digest()[:4]
        theirs = [base64.b64decode(s.split(" ")[2]) for s in signatures.splitlines() if s.split(" ")[1] == origin]
        theirs = [raw[4:] for raw in theirs if raw[:4] == wanted]
        try:
            assert theirs
            for signature in theirs:
                Ed25519PublicKey.from_public_bytes(public).verify(signature, text.encode())
        except (AssertionError, InvalidSignature):
            return 403, b""
        size, root = int(size_line), base64.b64decode(root_line)
        if old > size:
            return 400, b""
        seen_size, seen_root = self.latest.get(origin, (0, b""))
        if old != seen_size:
            return 409, b"%d\n" % seen_size
        if size == 0 and root != hashlib.sha256(b"").digest():
            return 422, b""
        if old == 0 and proof or old == size and root != seen_root or 0 < old < size and not _consistent(old, size, seen_root, root, proof):
            return 422, b""
        self.latest[origin] = (size, root)
        when = int(time.time()) if self.time is None else self.time
        signed = self.key.sign(b"cosignature/v1\ntime %d\n" % when + text.encode())
        line = base64.b64encode(self.key_id + struct.pack(">Q", when) + signed).decode()
        return 200, f"\u2014 {self.name} {line}\n".encode()

    def serve(self) -> tuple[str, http.server.ThreadingHTTPServer]:
        witness = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, answer = witness.add_checkpoint(body) if self.path == "/w1/add-checkpoint" else (404, b"")
                self.send_response(status)
                self.send_header("Content-Type", "text/x.tlog.size" if status == 409 else "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/w1", server


def _consistent(old: int, size: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2, written out again for the witness."""

    def node(left: bytes, right: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + left + right).digest()

    if not proof:
        return False
    path = [old_root, *proof] if old & (old - 1) == 0 else list(proof)
    fn, sn = old - 1, size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


def test_a_witness_on_loopback_cosigns_as_the_log_grows_refuses_a_rewritten_log_and_verify_checks_its_cosignatures(write_config, tmp_path):
    config = write_config()
    data_dir = config.parent / "data"
    log = AuditLog(data_dir)
    for number in range(3):
        log.append(ConfigLoaded(path=f"/etc/edge/{number}.toml", sha256="0" * 64))
    witness = LoopbackWitness("witness.example/w1")
    witness.trust(cli(config, "export-key", "--format", "note").stdout.strip())
    url, server = witness.serve()
    try:
        first = cli(config, "witness", "push", url, "--key", witness.vkey, "--out", tmp_path / "cosigned.note")
        assert first.returncode == 0, first.stderr
        size = witness.latest[f"edge.local/audit/{log.log_id()}"][0]
        assert f"the witness witness.example/w1 cosigned the log's tree of {size} entries" in first.stdout
        assert (tmp_path / "cosigned.note").read_text().count("\u2014 ") == 2  # the log's signature and the witness's
        for number in range(120):
            log.append(ConfigLoaded(path=f"/etc/edge/later{number}.toml", sha256="1" * 64))
        second = cli(config, "witness", "push", url, "--key", witness.vkey)
        assert second.returncode == 0, second.stderr
        assert witness.answers == [200, 200]  # the second from the size the log recorded, with a consistency proof
        grown = witness.latest[f"edge.local/audit/{log.log_id()}"][0]
        assert grown > size + 120
        verified = cli(config, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert f"cosigned by witness witness.example/w1+{witness.key_id.hex()}: {grown} entries" in verified.stdout

        witness.latest[f"edge.local/audit/{log.log_id()}"] = _first_state(witness, size, data_dir)
        conflict = cli(config, "witness", "push", url, "--key", witness.vkey)  # it knows an older size than the log says
        assert conflict.returncode == 0 and witness.answers[-2:] == [409, 200], (conflict.stderr, witness.answers)

        whole = (data_dir / "audit.jsonl").read_bytes()
        lines = whole.splitlines(keepends=True)
        (data_dir / "audit.jsonl").write_bytes(b"".join(_resigned(lines, 2, (data_dir / "audit.key").read_bytes())))
        named = cli(config, "verify")  # its own cosignatures no longer fit the rewritten log
        first_cosigned = next(n for n, raw in enumerate(lines, start=1) if b'"type":"witness.cosigned"' in raw)
        assert named.returncode == 1 and f"line {first_cosigned}: the witness witness.example/w1 cosigned a tree of" in named.stdout
        refused = cli(config, "witness", "push", url, "--key", witness.vkey)
        assert refused.returncode == 1 and witness.answers[-1] == 422
        assert "is NOT consistent with what it cosigned before for this log: the log was rewritten" in refused.stderr
        (data_dir / "audit.jsonl").write_bytes(whole)

        other = write_config("other.toml", data_dir=tmp_path / "other")
        AuditLog(tmp_path / "other").append(ConfigLoaded(path="/etc/edge/x.toml", sha256="0" * 64))
        unknown = cli(other, "witness", "push", url, "--key", witness.vkey)
        assert unknown.returncode == 1 and "(HTTP 404): it does not know this log's origin" in unknown.stderr
        impostor = LoopbackWitness("witness.example/w1")
        wrong_key = cli(config, "witness", "push", url, "--key", impostor.vkey)
        assert wrong_key.returncode == 1 and "no cosignature of witness.example/w1's key that verifies" in wrong_key.stderr
        assert "not a witness's URL" in cli(config, "witness", "push", "file:///etc/passwd", "--key", witness.vkey).stderr
        assert "--key: not a verifier key" in cli(config, "witness", "push", url, "--key", "nonsense").stderr
    finally:
        server.shutdown()
        server.server_close()
    unreachable = cli(config, "witness", "push", url, "--key", witness.vkey)
    assert unreachable.returncode == 1 and "cannot reach the witness at" in unreachable.stderr and "Traceback" not in unreachable.stderr


def _first_state(witness: LoopbackWitness, size: int, data_dir: Path) -> tuple[int, bytes]:
    """The witness's record as it was after the first push: the log's tree of `size` lines."""
    lines = (data_dir / "audit.jsonl").read_bytes().splitlines()[:size]
    return size, merkle.root([merkle.leaf_hash(line) for line in lines])


def test_a_cosignature_whose_time_is_no_date_is_not_kept_and_one_in_the_log_is_named_not_a_traceback(write_config):
    config = write_config()
    data_dir = config.parent / "data"
    log = AuditLog(data_dir)
    log.append(ConfigLoaded(path="/etc/edge/a.toml", sha256="0" * 64))
    witness = LoopbackWitness("witness.example/w1")
    witness.trust(cli(config, "export-key", "--format", "note").stdout.strip())
    witness.time = 1 << 62  # a valid signature over a time no calendar holds
    url, server = witness.serve()
    try:
        pushed = cli(config, "witness", "push", url, "--key", witness.vkey)
    finally:
        server.shutdown()
        server.server_close()
    assert pushed.returncode == 1 and "Traceback" not in pushed.stderr, pushed.stderr
    assert f"time {1 << 62}" in pushed.stderr and b"witness.cosigned" not in (data_dir / "audit.jsonl").read_bytes()

    head = tree_head(log.log_id(), leaves_of(data_dir))  # such a line, kept by an older edge
    signature = note.cosign(head.text, witness.name, witness.key, 1 << 62)
    log.append(
        WitnessCosigned(
            witness=witness.name,
            vkey=witness.vkey,
            size=head.size,
            tree_hash=base64.b64encode(head.root).decode(),
            time=1 << 62,
            signature=base64.b64encode(signature.key_id + signature.signature).decode(),
        )
    )
    verified = cli(config, "verify")
    assert verified.returncode == 1 and "Traceback" not in verified.stderr, verified.stderr
    assert f"line {head.size + 1}: the cosignature of the witness witness.example/w1 carries the time {1 << 62}" in verified.stdout


class _ConflictingWitness(LoopbackWitness):
    """Answers every checkpoint 409 Conflict with a "size" no 64-bit number holds."""

    def _add(self, body: bytes) -> tuple[int, bytes]:
        return 409, b"9" * 5000 + b"\n"


def test_a_witness_409_with_a_size_past_64_bits_is_named_not_a_traceback(write_config):
    config = write_config()
    AuditLog(config.parent / "data").append(ConfigLoaded(path="/etc/edge/a.toml", sha256="0" * 64))
    witness = _ConflictingWitness("witness.example/w1")
    url, server = witness.serve()
    try:
        pushed = cli(config, "witness", "push", url, "--key", witness.vkey)
    finally:
        server.shutdown()
        server.server_close()
    assert pushed.returncode == 1 and "Traceback" not in pushed.stderr, pushed.stderr
    assert "answered 409 Conflict without the size it cosigned last" in pushed.stderr
