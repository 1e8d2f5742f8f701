"""`audit verify`: prove the log is intact and that the data agrees with it.

Read-only. The chain check stops at the first bad line and names it: nothing
after a broken link can be trusted. A tail cut off cleanly leaves a valid
shorter chain; only a witness (a checkpoint saved elsewhere) reveals that.
The data check then asks, for every session the log knows: is anything past
its expiry still held, or still openable with a key the device holds?
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from edge.audit.log import AuditLog, Checkpoint, canonical, checkpoint_text, entry_hash, public_key_from_hex, ZERO_HASH
from edge.crypto.age import AgeError, read_header, unwrap_file_key
from edge.errors import EdgeError
from edge.store.keystore import Keystore, KeystoreData
from edge.store.recorder import recording_path, transcript_path

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
    witness: str | None = None
    """What the witness check found, when a witness was given."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        data["problems"] = [{"line": p.line, "session": p.session, "message": str(p)} for p in self.problems]
        return data


@dataclass
class _Chain:
    entries: list[dict]
    hashes: list[str]
    public_key: str | None = None
    log_id: str | None = None


def verify(
    log: AuditLog,
    keystore: Keystore | None,
    now: datetime,
    on_time: timedelta,
    witness: Checkpoint | None = None,
) -> Verification:
    result = Verification()
    chain = _check_chain(log, result)
    if result.problems:
        return result
    if witness is not None:
        _check_witness(chain, witness, result)
        if result.problems:
            return result
    _check_data(chain, keystore, now, on_time, result)
    return result


def _check_chain(log: AuditLog, result: Verification) -> _Chain:
    chain = _Chain([], [])
    previous = ZERO_HASH
    for number, raw in log.lines():
        try:
            entry = json.loads(raw)
            valid = isinstance(entry, dict) and set(entry) == _KEYS and isinstance(entry["fields"], dict)
        except (ValueError, UnicodeDecodeError):
            valid = False
        if not valid:
            result.problems.append(Problem("not a valid audit entry (damaged, or cut off mid-line)", number))
            return chain
        if canonical(entry) != raw:
            result.problems.append(Problem("not in canonical form: the line was edited", number))
            return chain
        if entry_hash(entry) != entry["hash"]:
            result.problems.append(Problem("its hash does not match its content: the line was edited", number))
            return chain
        if entry["seq"] != number:
            result.problems.append(
                Problem(f"sequence number {entry['seq']} where {number} belongs: lines were deleted, duplicated or reordered", number)
            )
            return chain
        if entry["prev"] != previous:
            result.problems.append(Problem(f"does not follow line {number - 1}: the chain is broken", number))
            return chain
        if number == 1:
            if entry["type"] != "log.created":
                result.problems.append(Problem("the log does not begin with its log.created entry", number))
                return chain
            chain.log_id, chain.public_key = entry["fields"].get("log"), entry["fields"].get("public_key")
        if entry["type"] == "checkpoint" and not _checkpoint_ok(chain, entry):
            result.problems.append(Problem("checkpoint signature does not verify: forged or damaged", number))
            return chain
        result.checkpoints += entry["type"] == "checkpoint"
        chain.entries.append(entry)
        chain.hashes.append(entry["hash"])
        previous = entry["hash"]
    result.entries = len(chain.entries)
    if not chain.entries:
        result.problems.append(Problem(f"{log.path}: the audit log is missing or empty"))
    return chain


def _checkpoint_ok(chain: _Chain, entry: dict) -> bool:
    fields = entry["fields"]
    try:
        covered = int(fields["entries"])
        if not 1 <= covered <= len(chain.hashes) or chain.hashes[covered - 1] != fields["head"]:
            return False
        text = checkpoint_text(chain.log_id or "", covered, fields["head"])
        public_key_from_hex(chain.public_key or "").verify(bytes.fromhex(fields["signature"]), text)
        return True
    except (KeyError, ValueError, TypeError, InvalidSignature):
        return False


def _check_witness(chain: _Chain, witness: Checkpoint, result: Verification) -> None:
    if witness.log_id != chain.log_id:
        result.problems.append(Problem(f"witness: it is for log {witness.log_id}, but this log is {chain.log_id} (replaced?)"))
    elif witness.entries > len(chain.hashes):
        result.problems.append(
            Problem(f"witness: it saw {witness.entries} entries but the log has only {len(chain.hashes)}: the log was truncated")
        )
    elif chain.hashes[witness.entries - 1] != witness.head:
        result.problems.append(Problem("witness: this entry differs from what the witness saw", witness.entries))
    elif witness.signature:
        try:
            public_key_from_hex(chain.public_key or "").verify(witness.signature, witness.text)
        except (InvalidSignature, ValueError):
            result.problems.append(Problem("witness: its signature does not match this log's key"))
    if not result.problems:
        result.witness = f"consistent with the witness ({witness.entries} entries)"


def _check_data(chain: _Chain, keystore: Keystore | None, now: datetime, on_time: timedelta, result: Verification) -> None:
    created: dict[str, tuple[int, dict]] = {}
    gone: set[tuple[str, str]] = set()  # (session, kind) whose data was destroyed
    open_requests: dict[str, int] = {}
    for line, entry in enumerate(chain.entries, start=1):
        kind, fields = entry["type"], entry["fields"]
        if kind == "session.created":
            created[fields["session"]] = (line, fields)
        elif kind == "shred":
            gone |= {(s, fields["kind"]) for s in fields["sessions"]}
            result.shredded += 1
            late = float(fields.get("late_seconds", 0))
            result.worst_late_seconds = max(result.worst_late_seconds, late)
            result.shredded_on_time += late <= on_time.total_seconds()
        elif kind == "forget.requested":
            open_requests[fields["request"]] = line
        elif kind == "forget.fulfilled":
            open_requests.pop(fields["request"], None)
            gone |= {(s, k) for s in fields["sessions"] for k in ("audio", "transcript")}
        elif kind == "root.lost":
            gone |= {(s, k) for s in created for k in ("audio", "transcript")}
        elif kind == "export" and fields.get("purpose") == "training":
            origin = created.get(fields.get("session", ""))
            if origin is not None and origin[1].get("child"):
                result.problems.append(Problem(f"a child's session {fields['session']} was exported for training", line, fields["session"]))
    for request, line in sorted(open_requests.items(), key=lambda item: item[1]):
        result.problems.append(Problem(f"forget request {request} was never fulfilled; run the forget again", line))

    data = _open_keystore(keystore, result)
    for session, (line, fields) in sorted(created.items(), key=lambda item: item[1][0]):
        for kind in ("audio", "transcript"):
            expires = fields.get(f"{kind}_expires")
            if expires is None or datetime.fromisoformat(expires) + on_time > now or (session, kind) in gone:
                continue
            result.problems.append(
                Problem(f"session {session}: its {kind} expired at {expires} but no shred or forget of it is logged", line, session)
            )
    if data is None or keystore is None:
        return
    if keystore.root_lost:
        result.problems.append(Problem("the vault's root key is gone, so nothing retained can be opened; "
                                       "run any edge-agent command that writes (e.g. purge) to record the loss"))
    identities = [identity for bucket in data.buckets.values() for identity in keystore.identities(bucket)]
    for entry in sorted(data.sessions.values(), key=lambda s: s.created):
        if entry.id not in created:
            result.problems.append(Problem(f"session {entry.id}: held by the device but never logged", None, entry.id))
        for kind, expires, path in (
            ("audio", entry.audio_expires, recording_path(keystore.data_dir, entry.id)),
            ("transcript", entry.transcript_expires, transcript_path(keystore.data_dir, entry.id)),
        ):
            if expires is not None and expires <= now and _opens(path, identities):
                line = created.get(entry.id, (None,))[0]
                result.problems.append(
                    Problem(f"session {entry.id}: its {kind} expired at {expires.isoformat()} but still opens with a key the device holds", line, entry.id)
                )
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


def _opens(path: Path, identities: list) -> bool:
    """Whether any of `identities` unwraps the file's key (the header is enough to tell)."""
    try:
        with path.open("rb") as handle:
            unwrap_file_key(read_header(handle), identities)
        return True
    except (AgeError, FileNotFoundError):
        return False
