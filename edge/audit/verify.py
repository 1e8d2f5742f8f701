"""`audit verify`: prove the log is intact and that the data agrees with it.

Read-only. The chain check stops at the first bad line and names it: nothing
after a broken link can be trusted. A tail cut off cleanly leaves a valid
shorter chain; only a witness (a checkpoint saved elsewhere) reveals that.
The data check then asks, for every session the log knows: is anything past
its expiry still held, or still openable with a key the device holds?
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from edge.audit.log import (
    CHECKPOINT_EVERY,
    NEEDS_CHECKPOINT,
    ZERO_HASH,
    AuditLog,
    Checkpoint,
    canonical,
    checkpoint_text,
    public_key_from_hex,
)
from edge.crypto.age import read_header, unwrap_file_key
from edge.disk import layout
from edge.disk.files import reader_in
from edge.errors import AgeError, EdgeError, StorageError
from edge.store.keystore import Keystore
from edge.store.records import KeystoreData
from edge.values import DataKind, Purpose

_KEYS = {"seq", "wall", "mono", "boot", "type", "fields", "prev", "hash"}


@dataclass
class Problem:
    message: str
    line: int | None = None
    session: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return where + self.message


@dataclass
class Verification:
    problems: list[Problem] = field(default_factory=list)
    entries: int = 0
    checkpoints: int = 0
    shredded: int = 0
    shredded_on_time: int = 0
    worst_late_seconds: float = 0.0
    live_sessions: int = 0
    next_expiry: str | None = None
    recovered: int = 0
    """Torn final lines (power cut mid-write) cut off and logged as log.recovered."""
    torn_tail: bool = False
    """The log ends in a line cut off mid-write, not yet recovered: a failure until the next
    command that opens the data folder cuts it off and logs log.recovered."""
    witness: str | None = None
    """What the witness check found, when a witness was given."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["problems"] = [{"line": p.line, "session": p.session, "message": str(p)} for p in self.problems]
        return data


@dataclass
class _Chain:
    hashes: bytearray = field(default_factory=bytearray)
    """Every entry's hash, 32 bytes each (for checkpoints and witnesses)."""
    public_key: str | None = None
    log_id: str | None = None
    previous: str = ZERO_HASH
    last_checkpoint: int = 0
    """Line of the last checkpoint (0: none yet)."""
    must_sign: int | None = None
    """The first line after the last checkpoint that a checkpoint must cover (a shred, a
    forget fulfilled, a stop), if any."""

    def hash_of(self, seq: int) -> str:
        return self.hashes[32 * (seq - 1) : 32 * seq].hex()

    def __len__(self) -> int:
        return len(self.hashes) // 32


def verify(
    log: AuditLog,
    keystore: Keystore | None,
    now: datetime,
    on_time: timedelta,
    witness: Checkpoint | None = None,
) -> Verification:
    result = Verification()
    scan = _DataScan(result, on_time)
    result.torn_tail = log.ends_torn()
    chain = _check_chain(log, result, scan)
    if result.torn_tail and result.problems and result.problems[0].line == len(chain) + 1:
        result.problems[0].message += (
            "; it is the last line and has no newline: cut off by a crash or power cut? The next "
            "edge-agent command that writes (e.g. purge, or the agent's start) cuts it off and logs log.recovered"
        )
    if not result.problems:
        _check_unsigned_tail(chain, result)
    if result.problems:
        return result
    if witness is not None:
        _check_witness(chain, witness, result)
        if result.problems:
            return result
    _check_data(scan, keystore, now, on_time, result)
    return result


_BATCH = 4096
"""Lines parsed and re-encoded per JSON call: the fast path for an intact log."""
_HASH_MEMBER = b',"hash":"'


def _check_chain(log: AuditLog, result: Verification, scan: _DataScan) -> _Chain:
    """Check every line in order; stop at the first bad one and name it."""
    chain = _Chain()
    batch: list[tuple[int, bytes]] = []
    for number, raw in log.lines():
        batch.append((number, raw))
        if len(batch) == _BATCH:
            if not _check_batch(batch, chain, result, scan):
                return chain
            batch = []
    if batch:
        _check_batch(batch, chain, result, scan)
    result.entries = len(chain)
    if not result.problems and not len(chain):
        result.problems.append(Problem(f"{log.path}: the audit log is missing or empty"))
    return chain


def _check_batch(batch: list[tuple[int, bytes]], chain: _Chain, result: Verification, scan: _DataScan) -> bool:
    """One JSON parse and one canonical re-encode for the whole batch; line by line only
    when that fails, to name the first bad line."""
    joined = b"[" + b",".join(raw for _, raw in batch) + b"]"
    try:
        entries = json.loads(joined)
        whole = isinstance(entries, list) and len(entries) == len(batch) and canonical_list(entries) == joined
    except (ValueError, UnicodeDecodeError, RecursionError):
        whole = False
    for index, (number, raw) in enumerate(batch):
        entry = entries[index] if whole else _parse_line(number, raw, result)
        if entry is None or not _check_entry(number, raw, entry, chain, result):
            return False
        scan.feed(number, entry)
    return True


def canonical_list(entries: list[Any]) -> bytes:
    return json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _parse_line(number: int, raw: bytes, result: Verification) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        entry = None
    if not _well_formed(entry):
        result.problems.append(Problem("not a valid audit entry (damaged, or cut off mid-line)", number))
        return None
    if canonical(entry) != raw:
        result.problems.append(Problem("not in canonical form: the line was edited", number))
        return None
    checked: dict[str, Any] = entry
    return checked


def _well_formed(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and entry.keys() == _KEYS
        and isinstance(entry["fields"], dict)
        and type(entry["seq"]) is int
        and all(isinstance(entry[k], str) for k in ("type", "prev", "hash", "wall"))
    )


def _content_hash(raw: bytes) -> bytes:
    """entry_hash() of a canonical line (as bytes), without re-encoding it: the line minus its
    hash member. (In canonical JSON `"hash"` follows `"fields"`, and `,"hash":"` cannot occur
    inside a string, where quotes are escaped.)"""
    at = raw.rfind(_HASH_MEMBER)
    end = at + len(_HASH_MEMBER) + 64
    if at < 0 or raw[end : end + 1] != b'"':
        return b""
    digest = hashlib.sha256(raw[:at])
    digest.update(raw[end + 1 :])
    return digest.digest()


def _check_entry(number: int, raw: bytes, entry: dict[str, Any], chain: _Chain, result: Verification) -> bool:
    if not _well_formed(entry):
        result.problems.append(Problem("not a valid audit entry (damaged, or cut off mid-line)", number))
        return False
    try:
        digest = bytes.fromhex(entry["hash"])
    except (TypeError, ValueError):
        digest = b"?"
    if _content_hash(raw) != digest:
        result.problems.append(Problem("its hash does not match its content: the line was edited", number))
        return False
    if entry["seq"] != number:
        result.problems.append(
            Problem(f"sequence number {entry['seq']} where {number} belongs: lines were deleted, duplicated or reordered", number)
        )
        return False
    if entry["prev"] != chain.previous:
        result.problems.append(Problem(f"does not follow line {number - 1}: the chain is broken", number))
        return False
    if number == 1:
        if entry["type"] != "log.created":
            result.problems.append(Problem("the log does not begin with its log.created entry", number))
            return False
        chain.log_id, chain.public_key = entry["fields"].get("log"), entry["fields"].get("public_key")
    if entry["type"] == "checkpoint":
        if not _checkpoint_ok(chain, entry, number):
            result.problems.append(Problem("checkpoint signature does not verify: forged or damaged", number))
            return False
        result.checkpoints += 1
        chain.last_checkpoint, chain.must_sign = number, None
    elif entry["type"] in NEEDS_CHECKPOINT and chain.must_sign is None:
        chain.must_sign = number
    chain.hashes += digest
    chain.previous = entry["hash"]
    return True


def _checkpoint_ok(chain: _Chain, entry: dict[str, Any], number: int) -> bool:
    """A checkpoint signs the line just before it, with the log's own key."""
    fields = entry["fields"]
    try:
        covered = fields["entries"]
        if type(covered) is not int or covered != number - 1 or chain.hash_of(covered) != fields["head"]:
            return False
        text = checkpoint_text(chain.log_id or "", covered, fields["head"])
        public_key_from_hex(chain.public_key or "").verify(bytes.fromhex(fields["signature"]), text)
        return True
    except (KeyError, ValueError, TypeError, InvalidSignature):
        return False


def _check_unsigned_tail(chain: _Chain, result: Verification) -> None:
    """The writer signs every CHECKPOINT_EVERY entries and right after every shred, forget and
    stop, in the same write. So an unsigned tail that is that long, or holds such an event,
    means checkpoints were removed: lines in the middle were deleted or edited and the log
    re-chained, or the signing was skipped."""
    if chain.must_sign is not None:
        result.problems.append(
            Problem(
                "this event must be covered by a signed checkpoint, but no checkpoint follows it: "
                "checkpoints were removed (lines deleted or edited, and the log re-chained)",
                chain.must_sign,
            )
        )
    elif len(chain) - chain.last_checkpoint >= CHECKPOINT_EVERY:
        line = chain.last_checkpoint + CHECKPOINT_EVERY
        result.problems.append(
            Problem(
                f"{CHECKPOINT_EVERY} entries in a row without a signed checkpoint (the last is at line "
                f"{chain.last_checkpoint or 'none'}): checkpoints were removed (lines deleted or edited, and the log re-chained)",
                line,
            )
        )


def _check_witness(chain: _Chain, witness: Checkpoint, result: Verification) -> None:
    if witness.signature:  # first: an edited witness must not pass for a shorter log
        try:
            public_key_from_hex(chain.public_key or "").verify(witness.signature, witness.text)
        except (InvalidSignature, ValueError):
            result.problems.append(
                Problem(
                    "witness: its signature does not match its text and this log's key (the witness was edited, or belongs to another log)"
                )
            )
            return
    if witness.log_id != chain.log_id:
        result.problems.append(Problem(f"witness: it is for log {witness.log_id}, but this log is {chain.log_id} (replaced?)"))
    elif witness.entries > len(chain):
        result.problems.append(
            Problem(f"witness: it saw {witness.entries} entries but the log has only {len(chain)}: the log was truncated")
        )
    elif witness.entries < 1 or chain.hash_of(witness.entries) != witness.head:
        result.problems.append(Problem("witness: this entry differs from what the witness saw", witness.entries))
    if not result.problems:
        result.witness = f"consistent with the witness ({witness.entries} entries)"


class _DataScan:
    """What the log says about the data, gathered entry by entry (nothing else is kept).

    Hashes are unkeyed, so anyone can chain a line: every field is checked for its type
    here, and a malformed one is a problem named by its line, never a crash."""

    def __init__(self, result: Verification, on_time: timedelta) -> None:
        self.result = result
        self.on_time_seconds = on_time.total_seconds()
        self.created: dict[str, tuple[int, datetime | None, datetime | None]] = {}
        """session -> (line, audio_expires, transcript_expires)"""
        self.children: set[str] = set()
        self.gone: set[tuple[str, str]] = set()
        """(session, kind) whose data was destroyed"""
        self.open_requests: dict[str, int] = {}
        self.problems: list[Problem] = []
        """Found while scanning; reported by _check_data, after the chain proved intact."""

    def feed(self, line: int, entry: dict[str, Any]) -> None:
        try:
            self._feed(line, entry)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # hashes are unkeyed: anyone can chain a line
            self.problems.append(Problem(f"a {entry['type']!r} event with missing or malformed fields ({exc})", line))

    def _feed(self, line: int, entry: dict[str, Any]) -> None:
        kind, fields, result = entry["type"], entry["fields"], self.result
        if kind == "session.created":
            session = _text(fields, "session")
            self.created[session] = (line, _instant(fields, "audio_expires"), _instant(fields, "transcript_expires"))
            if fields.get("child"):
                self.children.add(session)
        elif kind == "shred":
            sessions = _texts(fields, "sessions")
            self.gone.update((s, _text(fields, "kind")) for s in sessions)
            late = fields.get("late_seconds", 0)
            if type(late) not in (int, float):
                raise ValueError("late_seconds is not a number")
            result.shredded += 1
            result.worst_late_seconds = max(result.worst_late_seconds, float(late))
            result.shredded_on_time += late <= self.on_time_seconds
        elif kind == "forget.requested":
            self.open_requests.setdefault(_text(fields, "request"), line)
        elif kind == "forget.fulfilled":
            sessions = _texts(fields, "sessions")
            self.open_requests.pop(_text(fields, "request"), None)
            self.gone.update((s, k) for s in sessions for k in DataKind)
        elif kind == "log.recovered":
            result.recovered += 1
        elif kind == "root.lost":
            self.gone.update((s, k) for s in self.created for k in DataKind)
        elif kind == "export" and fields.get("purpose") == Purpose.TRAINING and fields.get("session") in self.children:
            self.problems.append(Problem(f"a child's session {fields['session']} was exported for training", line, fields["session"]))


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields[name]
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a string")
    return value


def _texts(fields: dict[str, Any], name: str) -> list[str]:
    value = fields[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} is not a list of strings")
    return value


def _instant(fields: dict[str, Any], name: str) -> datetime | None:
    """An ISO 8601 instant with a zone, or None (not kept)."""
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a date")
    instant = datetime.fromisoformat(value)
    if instant.tzinfo is None:
        raise ValueError(f"{name} has no time zone")
    return instant


def _check_data(scan: _DataScan, keystore: Keystore | None, now: datetime, on_time: timedelta, result: Verification) -> None:
    result.problems.extend(scan.problems)
    for request, line in sorted(scan.open_requests.items(), key=lambda item: item[1]):
        result.problems.append(Problem(f"forget request {request} was never fulfilled; run the forget again", line))
    created, gone = scan.created, scan.gone
    data = _open_keystore(keystore, result)
    for session, (line, audio_expires, transcript_expires) in sorted(created.items(), key=lambda item: item[1][0]):
        for kind, expires in ((DataKind.AUDIO, audio_expires), (DataKind.TRANSCRIPT, transcript_expires)):
            if expires is None or expires + on_time > now or (session, kind) in gone:
                continue
            result.problems.append(
                Problem(
                    f"session {session}: its {kind} expired at {expires.isoformat()} but no shred or forget of it is logged", line, session
                )
            )
    if data is None or keystore is None:
        return
    if keystore.root_lost:
        result.problems.append(
            Problem(
                f"the vault's root key is gone ({keystore.root_lost}), so nothing retained can be "
                "opened; the agent records the loss at its next start"
            )
        )
    identities = [identity for bucket in data.buckets.values() for identity in keystore.identities(bucket)]
    for entry in sorted(data.sessions.values(), key=lambda s: s.created):
        if entry.id not in created:
            result.problems.append(Problem(f"session {entry.id}: held by the device but never logged", None, entry.id))
        for kind, expires, name in (
            (DataKind.AUDIO, entry.audio_expires, layout.recording(entry.id)),
            (DataKind.TRANSCRIPT, entry.transcript_expires, layout.transcript(entry.id)),
        ):
            if expires is not None and expires <= now and _opens(keystore.data_dir, name, identities):
                logged = created.get(entry.id)
                result.problems.append(
                    Problem(
                        f"session {entry.id}: its {kind} expired at {expires.isoformat()} but still opens with a key the device holds",
                        logged[0] if logged else None,
                        entry.id,
                    )
                )
    for pending in data.forgets.values():
        result.problems.append(Problem(f"forget request {pending.request} is not finished yet; the next purge or forget finishes it"))
    live = [e for e in data.sessions.values() if e.audio_bucket or e.transcript_bucket]
    result.live_sessions = len(live)
    upcoming = [t for e in live for t in (e.audio_expires, e.transcript_expires) if t is not None and t > now]
    result.next_expiry = min(upcoming).isoformat() if upcoming else None


def _open_keystore(keystore: Keystore | None, result: Verification) -> KeystoreData | None:
    if keystore is None:
        return None
    try:
        return keystore.read()
    except EdgeError as exc:
        result.problems.append(Problem(f"the keystore cannot be checked: {exc}"))
        return None


def _opens(data_dir: Path, name: str, identities: list[Any]) -> bool:
    """Whether any of `identities` unwraps the file's key (the header is enough to tell)."""
    try:
        with reader_in(data_dir, name) as handle:
            unwrap_file_key(read_header(handle), identities)
        return True
    except (AgeError, FileNotFoundError):
        return False
    except StorageError:
        return False  # a link or a folder in its place: it opens nothing
