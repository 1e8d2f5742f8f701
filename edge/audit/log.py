"""The audit log: DATA_DIR/audit.jsonl, one event a line, hash-chained and signed.

Each line is the canonical JSON (sorted keys, no spaces, ASCII) of
{seq, wall, mono, boot, type, fields, prev, hash}, where `hash` is the SHA-256 of
the canonical JSON of the same object without `hash`, and `prev` is the previous
line's hash (64 zeros for the first). Checkpoints are Ed25519 signatures over a
short text naming the log, its length and its head hash (see docs/FORMATS.md);
`openssl pkeyutl -verify -rawin` checks them with the exported public key.

A writer signs what it wrote by the end of every session and command (`sign`, and
`sign_open_tails` when a command ends); until then it holds the tail (tail.py), so that
`audit verify` can tell a tail still being written from one whose writer is gone. The
first writer to find such an orphaned tail records it (`log.unsigned`) and signs it.

The log outlives the data it describes, so it must never become the leak:
events carry ids, profile names, times and counts, never audio, transcript text
or key material. `append` refuses fields whose names say otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge.audit import note, transparency
from edge.audit.tail import TailHold
from edge.boot import boot_id
from edge.disk.files import open_in, read_in, why, write_atomic_in
from edge.disk.layout import AUDIT_KEY, AUDIT_LOG
from edge.disk.lock import DataLock
from edge.disk.versioned import AUDIT_HEADER
from edge.errors import AuditError, EdgeError, StorageError
from edge.events import EVENTS, AuditEvent, CheckpointSigned, LogCreated, LogRecovered, LogUnsigned
from edge.faults import armed, crash_point

ZERO_HASH = "0" * 64
_FIRST_LINE_AT_MOST = 4096
"""log.created is about 250 bytes."""
CHECKPOINT_EVERY = 100
"""A checkpoint follows every entry whose seq is a multiple of this (and every event that
is signed at once: AuditEvent.needs_checkpoint)."""
EVENT_TYPES = frozenset(EVENTS)
"""Every event type edge writes (edge/events.py; docs/FORMATS.md section 6)."""
_FORBIDDEN_FIELDS = ("text", "words", "transcript", "audio", "pcm", "key", "identity", "secret", "root")


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


CHECKPOINT_V1 = "edge-audit-checkpoint/v1"
"""The first line of what a (format 1) checkpoint signs."""


def checkpoint_text(log_id: str, entries: int, head: str) -> bytes:
    """What a checkpoint signs: small, line-based, checkable by hand."""
    return f"{CHECKPOINT_V1}\nlog {log_id}\nentries {entries}\nhead {head}\n".encode()


@dataclass(frozen=True)
class Checkpoint:
    log_id: str
    entries: int
    head: str
    signature: bytes

    @property
    def text(self) -> bytes:
        return checkpoint_text(self.log_id, self.entries, self.head)

    @classmethod
    def parse(cls, text: bytes, signature: bytes = b"") -> Checkpoint:
        lines = text.decode("ascii", errors="replace").splitlines()
        try:
            if lines[0] != CHECKPOINT_V1 or len(lines) != 4:
                raise ValueError
            fields = dict(line.split(" ", 1) for line in lines[1:])
            return cls(fields["log"], int(fields["entries"]), fields["head"], signature)
        except (ValueError, KeyError, IndexError):
            raise AuditError("not an edge audit checkpoint (expected 4 lines: version, log, entries, head)") from None


_UNSIGNED: set[AuditLog] = set()
"""The logs this process wrote lines to that no checkpoint follows yet."""


def sign_open_tails() -> None:
    """The end of a command: every log this process left unsigned gets its checkpoint (all
    are tried; the first failure is raised)."""
    failed: EdgeError | None = None
    for log in list(_UNSIGNED):
        try:
            log.sign()
        except EdgeError as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


SESSION_LINES = "session."
"""The types whose writes carry coarse times (docs/FORMATS.md section 6, "Coarse times")."""


class AuditLog:
    """Appends events; one writer at a time (the data-folder lock)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / AUDIT_LOG
        self.key_path = data_dir / AUDIT_KEY
        self._hold = TailHold(data_dir)

    # -- writing -------------------------------------------------------------------

    def append(self, event: AuditEvent) -> dict[str, Any]:
        """Append one event (fsynced), signed in the same write if it needs a checkpoint."""
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[AuditEvent], checkpoint: bool = False) -> list[dict[str, Any]]:
        """Append events in order with one write and one fsync (a purge of many buckets).
        A checkpoint follows every entry whose seq is a multiple of CHECKPOINT_EVERY, and the
        batch ends with one if an event needs it or with `checkpoint` (a purge's end): in the
        same write, so no crash can separate a shred from its signature."""
        batch = _checked(events)
        if not batch and not checkpoint:
            return []
        with DataLock(self.data_dir):
            last = self._head()
            written: list[dict[str, Any]] = []
            lines, last = self._chained(last, batch, checkpoint, written)
            self._write(lines, last)
            return written

    def append_groups(self, groups: Sequence[Sequence[AuditEvent]]) -> int:
        """Append each group exactly as `append_many(group)` would (signed at its end if one of
        its events needs it), all in one write and one fsync; the last seq. For writing a
        long history at once (the benchmarks' logs of a million lines)."""
        batches = [_checked(group) for group in groups]
        with DataLock(self.data_dir):
            last = self._head()
            lines: list[bytes] = []
            for batch in batches:
                chained, last = self._chained(last, batch, False, [])
                lines += chained
            self._write(lines, last)
            return int(last["seq"])

    def sign(self) -> None:
        """The end of a session or command: a checkpoint follows the log's last line, unless
        one is that line already (and without a log there is nothing to sign)."""
        with DataLock(self.data_dir):
            last = self._tip(create=False)
            if last is not None and last["type"] != "checkpoint":
                last, _ = self._signed(last)
                self._write([canonical(last)], last)
            self._release()

    def _chained(
        self, last: dict[str, Any], batch: list[tuple[str, dict[str, Any], bool]], checkpoint: bool, written: list[dict[str, Any]]
    ) -> tuple[list[bytes], dict[str, Any]]:
        """The lines for `batch` (type, fields, whether it needs a checkpoint) after `last`,
        with the checkpoints the format requires, and the last of them."""
        lines = []
        coarse = any(event_type.startswith(SESSION_LINES) for event_type, _, _ in batch)
        for event_type, fields, _ in batch:
            last = self._entry(last, event_type, fields, coarse)
            written.append(last)
            lines.append(canonical(last))
            if last["seq"] % CHECKPOINT_EVERY == 0:
                last, _ = self._signed(last)
                lines.append(canonical(last))
        if (checkpoint or any(needs for _, _, needs in batch)) and last["type"] != "checkpoint":
            last, _ = self._signed(last)
            lines.append(canonical(last))
        return lines, last

    def recover(self) -> None:
        """Cut off (and log) a final line torn by a crash mid-write, and sign (and log) lines
        their writer left unsigned, if there are any. Every command that opens the data folder
        to write does this, so the log is whole and signed before it is used."""
        with DataLock(self.data_dir):
            self._tip(create=False)

    def ends_torn(self) -> bool:
        """Whether the log ends in a line cut off mid-write (read-only)."""
        try:
            with os.fdopen(open_in(self.data_dir, AUDIT_LOG, os.O_RDONLY), "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                return size > 0 and handle.seek(size - 1) >= 0 and handle.read(1) != b"\n"
        except FileNotFoundError:
            return False

    def checkpoint(self) -> Checkpoint:
        """Sign the current head and record the signature in the log itself."""
        with DataLock(self.data_dir):
            entry, checkpoint = self._signed(self._head())
            self._write([canonical(entry)], entry)
            return checkpoint

    def _signed(self, last: dict[str, Any]) -> tuple[dict[str, Any], Checkpoint]:
        """The checkpoint entry that signs `last`, and the checkpoint itself."""
        log_id = self.log_id()
        signature = self._signing_key().sign(checkpoint_text(log_id, last["seq"], last["hash"]))
        signed = CheckpointSigned(entries=last["seq"], head=last["hash"], signature=signature.hex())
        entry = self._entry(last, signed.event_type, signed.to_fields(), coarse=last["mono"] is None)
        return entry, Checkpoint(log_id, last["seq"], last["hash"], signature)

    def public_key_pem(self) -> bytes:
        with DataLock(self.data_dir):
            return self._signing_key().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)

    def sign_document(self, document: bytes) -> bytes:
        """A raw Ed25519 signature of `document` (a deletion certificate) with the log's key,
        checkable like a checkpoint's (`openssl pkeyutl -verify -rawin`). Refused unless the
        log exists and names this key: a document is never signed for a log it is not of.
        A document must not begin as a checkpoint's text does (it could pass for one)."""
        if document.startswith(b"edge-audit-checkpoint/"):
            raise AuditError("refusing to sign a document that reads as a checkpoint")
        with DataLock(self.data_dir, create=False):
            try:
                first = next(self.entries())
            except StopIteration:
                raise AuditError(f"{self.path}: the audit log is empty") from None
            key = self._signing_key()
            if first["fields"].get("public_key") != key.public_key().public_bytes_raw().hex():
                raise AuditError(f"{self.key_path}: not the key line 1 of {self.path} names; refusing to sign with it")
            return key.sign(document)

    def tree_checkpoint(self) -> note.SignedNote:
        """A C2SP checkpoint of every line, signed by the log's key as a signed note. The log is
        made to end in a checkpoint of its own first (as `sign` does), so the tree head covers
        a log whose every line is signed in it too."""
        with DataLock(self.data_dir):
            last = self._head()
            if last["type"] != "checkpoint":
                last, _ = self._signed(last)
                self._write([canonical(last)], last)
            leaves = transparency.leaves_of(self.data_dir)
            if len(leaves) != last["seq"]:
                raise AuditError(
                    f"{self.path}: its last line is numbered {last['seq']} but it has {len(leaves)}; run `edge-agent audit verify`"
                )
            head = transparency.tree_head(self.log_id(), leaves)
            return note.sign(head.text, head.origin, self._signing_key())

    def verifier_key(self) -> str:
        """The C2SP note verifier key of the log's checkpoints (its name is the log's origin)."""
        with DataLock(self.data_dir):
            public = self._signing_key().public_key().public_bytes_raw()
        return note.verifier_key(transparency.origin(self.log_id()), public)

    # -- reading -------------------------------------------------------------------

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """(line number, raw line without the newline), from 1."""
        try:
            handle = os.fdopen(open_in(self.data_dir, AUDIT_LOG, os.O_RDONLY), "rb", buffering=1 << 20)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read the audit log: {exc.strerror}") from None
        with handle:
            for number, raw in enumerate(handle, start=1):
                yield number, raw[:-1] if raw.endswith(b"\n") else raw

    def entries(self) -> Iterator[dict[str, Any]]:
        """Parsed events; a line that is not an event is an error naming it (see `audit verify`)."""
        for number, raw in self.lines():
            try:
                entry = json.loads(raw)
                if not isinstance(entry, dict) or not {"seq", "wall", "type", "fields"} <= entry.keys():
                    raise ValueError
                if type(entry["seq"]) is not int or not isinstance(entry["type"], str) or not isinstance(entry["fields"], dict):
                    raise ValueError
            except (ValueError, UnicodeDecodeError):
                raise AuditError(f"{self.path}: line {number} is not an audit event; `edge-agent audit verify` explains") from None
            yield entry

    def log_id(self) -> str:
        """What line 1 names (read alone: every checkpoint needs it, and the log may be long)."""
        try:
            with os.fdopen(open_in(self.data_dir, AUDIT_LOG, os.O_RDONLY), "rb", buffering=0) as handle:
                first = handle.read(_FIRST_LINE_AT_MOST).partition(b"\n")[0]
        except FileNotFoundError:
            first = b""
        if not first:
            raise AuditError(f"{self.path}: the audit log is empty")
        try:
            entry = json.loads(first)
            log = entry["fields"]["log"]
            if entry["type"] != "log.created" or not isinstance(log, str):
                raise ValueError
            AUDIT_HEADER.check(entry["fields"], self.path)  # a newer edge's log is never signed as this one's
            return log
        except (ValueError, TypeError, KeyError):
            raise AuditError(f"{self.path}: line 1 is not the log.created entry; `edge-agent audit verify` explains") from None

    # -- internals -----------------------------------------------------------------

    def _head(self) -> dict[str, Any]:
        """The last entry; a new log starts with "log.created" naming its id and public key."""
        last = self._tip(create=True)
        assert last is not None
        return last

    def _tip(self, create: bool) -> dict[str, Any] | None:
        """The last entry, after what must precede any new line: a new log's first line (with
        `create`); a torn last line cut off; lines whose writer is gone without signing them
        recorded as such. The two records are signed at once, in one write."""
        last, torn = self._last_entry()
        if last is None:
            if not create:
                return None
            public = self._signing_key().public_key().public_bytes_raw().hex()
            created = LogCreated(log=secrets.token_hex(8), public_key=public, format=1)
            last = self._entry(None, created.event_type, created.to_fields())
            self._write([canonical(last)], last)
            return last
        records: list[AuditEvent] = []
        if last["type"] != "checkpoint" and not self._hold.held and self._hold.nobody_writing():
            first = self._first_unsigned(last)
            records.append(LogUnsigned(first=first, lines=last["seq"] - first + 1))
        if torn is not None:
            records.append(torn)
        if records:
            lines, last = self._chained(last, _lines_of(records), True, [])
            self._write(lines, last)
        return last

    def _first_unsigned(self, last: dict[str, Any]) -> int:
        """The first line after the last checkpoint, read back from the end (the tail is
        short: a checkpoint follows every 100th line)."""
        unsigned = 0
        with os.fdopen(open_in(self.data_dir, AUDIT_LOG, os.O_RDONLY), "rb") as handle:
            for raw in _lines_back(handle, handle.seek(0, os.SEEK_END)):
                try:
                    entry = json.loads(raw)
                except ValueError:
                    break  # damage `audit verify` names; the record still says where its tail ends
                if not isinstance(entry, dict) or entry.get("type") == "checkpoint":
                    break
                unsigned += 1
        first: int = last["seq"] - unsigned + 1
        return first

    def _signing_key(self) -> Ed25519PrivateKey:
        try:
            raw = read_in(self.data_dir, AUDIT_KEY)
        except StorageError as exc:
            raise AuditError(f"cannot read the audit signing key: {exc}") from None
        if raw is None:
            if self.path.exists() and self.path.stat().st_size:
                raise AuditError(
                    f"{self.key_path}: the audit signing key is missing although the log exists; "
                    "new checkpoints cannot be signed (the log may have been tampered with)"
                ) from None
            key = Ed25519PrivateKey.generate()
            write_atomic_in(self.data_dir, AUDIT_KEY, key.private_bytes_raw())
            return key
        if len(raw) != 32:
            raise AuditError(f"{self.key_path}: is not an audit signing key (expected 32 bytes)")
        return Ed25519PrivateKey.from_private_bytes(raw)

    def _last_entry(self) -> tuple[dict[str, Any] | None, LogRecovered | None]:
        """The last line, read from the end of the file (appends stay O(1)), and what a line
        cut off by a power cut during a write (no final newline) was, if one was: see _cut."""
        try:
            with os.fdopen(open_in(self.data_dir, AUDIT_LOG, os.O_RDWR), "r+b") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size == 0:
                    return None, None
                start, last_line, complete = _last_line(handle, size)
                if not complete:
                    return self._cut(handle, start, last_line)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read the audit log: {exc.strerror}") from None
        try:
            last = json.loads(last_line)
            if not isinstance(last, dict) or type(last.get("seq")) is not int or not isinstance(last.get("hash"), str):
                raise ValueError
            return last, None
        except ValueError:
            raise AuditError(f"{self.path}: the last line is damaged; run `edge-agent audit verify`") from None

    def _cut(self, handle: BinaryIO, start: int, torn: bytes) -> tuple[dict[str, Any] | None, LogRecovered | None]:
        """Cut a torn final line off (it was never complete, so nothing signed it); the caller
        logs that it happened, with its length and digest: recovered and reported, never
        silent. A whole entry that only lacks its newline is kept and given one."""
        try:
            whole = json.loads(torn)
        except ValueError:
            whole = None
        if isinstance(whole, dict) and canonical(whole) == torn and whole.get("hash") == entry_hash(whole):
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
            return whole, None
        handle.truncate(start)
        handle.flush()
        os.fsync(handle.fileno())
        if not start:
            return None, None
        last, _ = self._last_entry()  # signed at once by the caller: what the torn write lost may have been a checkpoint
        return last, LogRecovered(torn_bytes=len(torn), torn_sha256=hashlib.sha256(torn).hexdigest())

    def _entry(self, last: dict[str, Any] | None, event_type: str, fields: dict[str, Any], coarse: bool = False) -> dict[str, Any]:
        """The next line. `coarse`: a write about a session, or the checkpoint that signs one,
        says only the hour it was written in (and no monotonic time): its exact time would tell
        when someone spoke, and for how long, after the data is gone (docs/FORMATS.md section 6)."""
        now = datetime.now(timezone.utc)
        entry: dict[str, Any] = {
            "seq": 1 if last is None else last["seq"] + 1,
            "wall": now.replace(minute=0, second=0, microsecond=0).isoformat() if coarse else now.isoformat(timespec="milliseconds"),
            "mono": None if coarse else round(time.monotonic(), 3),
            "boot": boot_id(),
            "type": event_type,
            "fields": fields,
            "prev": ZERO_HASH if last is None else last["hash"],
        }
        entry["hash"] = entry_hash(entry)
        return entry

    def _write(self, lines: list[bytes], last: dict[str, Any]) -> None:
        """Persist `lines`, ending in `last`: holding the tail first if no checkpoint ends
        them, letting go of it after if one does."""
        if last["type"] != "checkpoint":
            self._hold.take()
            _UNSIGNED.add(self)
        if lines:
            self._persist(lines)
        if last["type"] == "checkpoint":
            self._release()

    def _release(self) -> None:
        self._hold.release()
        _UNSIGNED.discard(self)

    def _persist(self, lines: list[bytes]) -> None:
        """Append whole lines with one write and one fsync."""
        try:
            fd = open_in(self.data_dir, AUDIT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                data = memoryview(b"".join(line + b"\n" for line in lines))
                if armed("audit.torn"):  # a power cut in the middle of the write
                    os.write(fd, data[: len(data) // 2])
                    crash_point("audit.torn")
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot append to the audit log: {why(exc)}") from None


def _checked(events: Sequence[AuditEvent]) -> list[tuple[str, dict[str, Any], bool]]:
    """The events as lines to chain; an event the log must never hold is refused (a bug)."""
    batch = _lines_of(events)
    for event_type, fields, _ in batch:
        for name in fields:
            if name.lower() in _FORBIDDEN_FIELDS:
                raise AuditError(f"audit event {event_type!r}: field {name!r} could carry private data; refused")
        if event_type not in EVENT_TYPES:
            raise AuditError(f"audit event {event_type!r}: not a type the log knows (a bug in edge)")
    return batch


def _lines_of(events: Sequence[AuditEvent]) -> list[tuple[str, dict[str, Any], bool]]:
    """What the log writes of each event: its type, its fields, whether it needs a checkpoint."""
    return [(event.event_type, event.to_fields(), event.needs_checkpoint) for event in events]


def _last_line(handle: BinaryIO, size: int) -> tuple[int, bytes, bool]:
    """(offset where the last line starts, the line without its newline, whether it had one),
    reading backwards in blocks (a shred event naming many sessions can be long)."""
    handle.seek(size - 1)
    complete = handle.read(1) == b"\n"
    end = size - 1 if complete else size
    position, chunks = end, []
    while position > 0:
        step = min(position, 64 * 1024)
        position -= step
        handle.seek(position)
        block = handle.read(step)
        newline = block.rfind(b"\n")
        if newline >= 0:
            chunks.append(block[newline + 1 :])
            position += newline + 1
            break
        chunks.append(block)
    return position, b"".join(reversed(chunks))[: end - position], complete


def _lines_back(handle: BinaryIO, size: int) -> Iterator[bytes]:
    """The lines of a file that ends in a newline, last first, read in blocks from the end."""
    position, rest = size - 1, b""
    while position > 0:
        step = min(position, 64 * 1024)
        position -= step
        handle.seek(position)
        lines = (handle.read(step) + rest).split(b"\n")
        rest = lines[0]
        yield from reversed(lines[1:])
    if rest:
        yield rest


def public_key_from_hex(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
