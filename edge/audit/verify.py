"""`audit verify`: prove the log is intact and that the data agrees with it.

Read-only. The chain check stops at the first bad line and names it: nothing
after a broken link can be trusted. A writer signs the tail at the end of every
session and command, so lines after the last checkpoint are either still being
written (a writer holds them: tail.py) or a problem. A log cut off cleanly just
after one of its checkpoints leaves a valid shorter chain; only a witness (a
checkpoint saved elsewhere) reveals that.
The data check then asks, for every session the log knows: is anything past
its expiry still held, or still openable with a key the device holds?
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from edge.audit import merkle, note, transparency
from edge.audit.chain import Chain, Problem, ScanOp, check_range
from edge.audit.log import CHECKPOINT_EVERY, AuditLog, Checkpoint, public_key_from_hex
from edge.audit.note import SignedNote, parse_tree_head
from edge.audit.parallel import Parallel, check_chunks
from edge.audit.tail import still_written
from edge.crypto.age import read_header, unwrap_file_key
from edge.disk import layout
from edge.disk.files import open_in, reader_in
from edge.errors import AgeError, AuditError, EdgeError, StorageError
from edge.events import WitnessCosigned
from edge.instants import iso_utc
from edge.progress import Progress
from edge.store.details import open_sealed
from edge.store.keystore import Keystore
from edge.store.tables import KeystoreData
from edge.values import DataKind

__all__ = ["Parallel", "Problem", "Verification", "verify"]


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
    unsigned: int = 0
    """Lines after the last checkpoint that a running session or command wrote and signs
    when it ends (not yet protected: not a failure). Without a writer, they are a problem."""
    signed_late: int = 0
    """Lines a later command found unsigned, their writer gone (killed, a power cut), and
    signed (log.unsigned): nothing proves that none was removed before then."""
    witness: str | None = None
    """What the witness check found, when a witness was given."""
    cosigned: list[str] = field(default_factory=list)
    """Per witness that cosigned the log's tree (`audit witness push`): its latest cosignature."""
    details_forgotten: int = 0
    """Sessions whose sealed details no key the device holds opens: forgotten with the data
    (their policy check is then made from what stays clear only; see docs/FORMATS.md 6)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["problems"] = [{"line": p.line, "session": p.session, "message": str(p)} for p in self.problems]
        return data


def verify(
    log: AuditLog,
    keystore: Keystore | None,
    now: datetime,
    on_time: timedelta,
    witness: Checkpoint | SignedNote | None = None,
    parallel: Parallel | None = None,
    progress: Progress | None = None,
) -> Verification:
    """`witness`: a checkpoint kept elsewhere, edge's own (v1) or a C2SP signed note.
    `parallel` says when to use worker processes (by default: on every core, for a log of
    more than about 50,000 lines); the result is the same either way. `progress` hears how far
    a long (parallel) check has come."""
    result = Verification()
    scan = _DataScan(result, on_time)
    result.torn_tail = log.ends_torn()
    fd = _open(log)
    leaves: list[bytes] = []
    try:
        chain, size = _check_chain(fd, log, result, scan, parallel or Parallel(), progress)
        if result.torn_tail and result.problems and result.problems[0].line == chain.verified() + 1:
            result.problems[0].message += (
                "; it is the last line and has no newline: cut off by a crash or power cut? The next "
                "edge-agent command that writes (e.g. purge, or the agent's start) cuts it off and logs log.recovered"
            )
        if not result.problems and fd is not None:
            _check_unsigned_tail(chain, result, lambda: still_written(fd, size))
            if isinstance(witness, SignedNote) or scan.cosigned:
                leaves = transparency.leaves_in(fd, size, chain.verified())
                _check_cosignatures(chain, scan.cosigned, leaves, result)
    finally:
        if fd is not None:
            os.close(fd)
    if result.problems:
        return result
    if isinstance(witness, SignedNote):
        _check_tree_witness(chain, witness, leaves, result)
        if result.problems:
            return result
    elif witness is not None:
        _check_witness(chain, witness, result)
        if result.problems:
            return result
    _check_data(scan, keystore, now, on_time, result)
    return result


def _check_chain(
    fd: int | None, log: AuditLog, result: Verification, scan: _DataScan, parallel: Parallel, progress: Progress | None
) -> tuple[Chain, int]:
    """Check every line in order; stop at the first bad one and name it. Also: how many
    bytes were checked."""
    chain, problem, size = Chain(), None, 0
    if fd is not None:
        size = os.fstat(fd).st_size
        if parallel.applies(size):
            chain, problem = check_chunks(fd, size, parallel, scan.apply, progress)
        else:
            problem = check_range(fd, 0, size, chain, scan.apply)
    if problem is not None:
        result.problems.append(problem)
    result.entries, result.checkpoints = chain.verified(), chain.checkpoints
    if not result.problems and not result.entries:
        result.problems.append(Problem(f"{log.path}: the audit log is missing or empty"))
    return chain, size


def _open(log: AuditLog) -> int | None:
    """The log, opened as AuditLog.lines() opens it (no link followed); None if there is none."""
    try:
        return open_in(log.data_dir, layout.AUDIT_LOG, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"{log.path}: cannot read the audit log: {exc.strerror}") from None


def _check_unsigned_tail(chain: Chain, result: Verification, still_written: Callable[[], bool]) -> None:
    """The writer signs every CHECKPOINT_EVERY entries and right after every shred, forget and
    stop, in the same write. So an unsigned tail that is that long, or holds such an event,
    means checkpoints were removed: lines in the middle were deleted or edited and the log
    re-chained, or the signing was skipped. Any other unsigned tail is signed when the session
    or command writing it ends: it is a problem unless its writer is still there."""
    if chain.must_sign is not None:
        result.problems.append(
            Problem(
                "this event must be covered by a signed checkpoint, but no checkpoint follows it: "
                "checkpoints were removed (lines deleted or edited, and the log re-chained)",
                chain.must_sign,
            )
        )
    elif chain.verified() - chain.last_checkpoint >= CHECKPOINT_EVERY:
        line = chain.last_checkpoint + CHECKPOINT_EVERY
        result.problems.append(
            Problem(
                f"{CHECKPOINT_EVERY} entries in a row without a signed checkpoint (the last is at line "
                f"{chain.last_checkpoint or 'none'}): checkpoints were removed (lines deleted or edited, and the log re-chained)",
                line,
            )
        )
    elif chain.verified() > chain.last_checkpoint:
        unsigned = chain.verified() - chain.last_checkpoint
        if still_written():
            result.unsigned = unsigned
            return
        result.problems.append(
            Problem(
                f"the last {unsigned} line(s), from here, are signed by no checkpoint and no running edge process will "
                "sign them: lines were deleted (with the checkpoints that signed them) and the log re-chained, or "
                "their writer was killed before it could sign them (kill -9, a power cut). The next edge-agent "
                "command that writes (e.g. purge, or the agent's start) signs them and logs that it found them "
                "unsigned (log.unsigned)",
                chain.last_checkpoint + 1,
            )
        )


def _check_witness(chain: Chain, witness: Checkpoint, result: Verification) -> None:
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
    elif witness.entries > chain.verified():
        result.problems.append(
            Problem(f"witness: it saw {witness.entries} entries but the log has only {chain.verified()}: the log was truncated")
        )
    elif witness.entries < 1 or chain.hash_of(witness.entries) != witness.head:
        result.problems.append(Problem("witness: this entry differs from what the witness saw", witness.entries))
    if not result.problems:
        result.witness = f"consistent with the witness ({witness.entries} entries)"


def _check_tree_witness(chain: Chain, witness: SignedNote, leaves: list[bytes], result: Verification) -> None:
    """A C2SP checkpoint: its tree must be a prefix of the log's, by a consistency proof."""
    try:
        public_key = bytes.fromhex(chain.public_key or "")
    except ValueError:
        public_key = b""
    problem = transparency.witness_problem(witness, chain.log_id or "", public_key, leaves)
    if problem is not None:
        result.problems.append(Problem(problem))
        return
    size = parse_tree_head(witness.text).size
    result.witness = f"consistent with the witness's C2SP checkpoint ({size} entries; RFC 6962 consistency proof to {len(leaves)})"


def _check_cosignatures(chain: Chain, cosigned: list[tuple[int, WitnessCosigned]], leaves: list[bytes], result: Verification) -> None:
    """Every witness's cosignature kept in the log: on the log's own tree of the lines before it."""
    latest: dict[str, str] = {}
    tree = merkle.roots(leaves, {event.size for line, event in cosigned if 0 <= event.size < line})
    for line, event in cosigned:
        try:
            name, public = note.parse_verifier_key(event.vkey, note.COSIGNATURE)
            signature = note.parse_signature(f"{note.DASH} {event.witness} {event.signature}")
            root = base64.b64decode(event.tree_hash, validate=True)
        except (note.NoteError, ValueError):
            result.problems.append(Problem("a witness.cosigned entry whose key, signature or root is not of the C2SP formats", line))
            continue
        if name != event.witness or tree.get(event.size) != root:
            result.problems.append(
                Problem(f"the witness {event.witness} cosigned a tree of {event.size} entries that is not this log's", line)
            )
            continue
        text = note.TreeHead(transparency.origin(chain.log_id or ""), event.size, root).text
        if note.cosigned_at(note.SignedNote(text, (signature,)), name, public) != event.time:
            result.problems.append(Problem(f"the cosignature of the witness {event.witness} does not verify", line))
            continue
        instant = note.cosigned_instant(event.time)
        if instant is None:
            result.problems.append(
                Problem(f"the cosignature of the witness {event.witness} carries the time {event.time}, which is no date", line)
            )
            continue
        when = instant.isoformat()
        named = "+".join(event.vkey.split("+", 2)[:2])  # name and key id
        latest[event.vkey] = f"{named}: {event.size} entries, {when}"
    result.cosigned = list(latest.values())


class _DataScan:
    """What the log says about the data, gathered entry by entry in file order (nothing else
    is kept). Its inputs come from chain.scan, which checked every field for its type."""

    def __init__(self, result: Verification, on_time: timedelta) -> None:
        self.result = result
        self.on_time_seconds = on_time.total_seconds()
        self.created: dict[str, tuple[int, datetime | None, datetime | None]] = {}
        """session -> (line, audio_expires, transcript_expires)"""
        self.children: set[str] = set()
        self.gone: set[tuple[str, str]] = set()
        """(session, kind) whose data was destroyed"""
        self.open_requests: dict[str, int] = {}
        self.voices: dict[str, tuple[int, bool]] = {}
        """profile -> (line, held) of the last voice event: enrolled, or forgotten"""
        self.policies: dict[str, dict[str, tuple[int, int]]] = {}
        """policy version -> what each profile may keep (s), for every version adopted so far"""
        self.cosigned: list[tuple[int, WitnessCosigned]] = []
        """(line, event) of every witness cosignature kept in the log"""
        self.sealed: list[tuple[_Taken, str]] = []
        """Sessions whose start is sealed (edge.store.details), with their sealed details"""
        self.problems: list[Problem] = []
        """Found while scanning; reported by _check_data, after the chain proved intact."""

    def apply(self, op: ScanOp) -> None:
        result = self.result
        match op:
            case ("created", line, session, audio_expires, transcript_expires, child):
                self.created[session] = (line, _instant(audio_expires), _instant(transcript_expires))
                if child:
                    self.children.add(session)
            case ("gone", sessions, kind):
                self.gone.update((s, k) for s in sessions for k in ((kind,) if kind is not None else DataKind))
            case ("shredded", late):
                result.shredded += 1
                result.worst_late_seconds = max(result.worst_late_seconds, float(late))
                result.shredded_on_time += late <= self.on_time_seconds
            case ("requested", line, request):
                self.open_requests.setdefault(request, line)
            case ("fulfilled", request):
                self.open_requests.pop(request, None)
            case ("recovered",):
                result.recovered += 1
            case ("unsigned", lines):
                result.signed_late += lines
            case ("root lost",):
                self.gone.update((s, k) for s in self.created for k in DataKind)
                self.voices = {profile: (line, False) for profile, (line, _held) in self.voices.items()}
            case ("voice", line, profile, held):
                self.voices[profile] = (line, held)
            case ("training export", line, str() as session) if session in self.children:
                self.problems.append(Problem(f"a child's session {session} was exported for training", line, session))
            case ("adopted", line, version, limits):
                self.policies[version] = limits
            case ("taken", line, session, version, profile, created, audio_expires, transcript_expires, sealed):
                taken = _Taken(line, session, self.policies.get(version), version, profile, audio_expires, transcript_expires)
                if sealed is not None:  # its start is opened in _check_data, with the keystore's keys
                    self.sealed.append((taken, sealed))
                else:
                    self.problems.extend(_within_policy(taken, created))
            case ("cosigned", line, event):
                self.cosigned.append((line, event))
            case ("malformed", line, message):
                self.problems.append(Problem(message, line))


@dataclass(frozen=True)
class _Taken:
    """A session.created taken under a written policy: what its policy check needs but its start."""

    line: int
    session: str
    limits: dict[str, tuple[int, int]] | None
    """What the policy in force at its line lets each profile keep (None: no such policy)."""
    version: str
    profile: str
    audio_expires: str | None
    transcript_expires: str | None


def _within_policy(taken: _Taken, created: str | None) -> list[Problem]:
    """A session taken under a policy adopted before it, and kept no longer than that policy
    lets its profile keep each kind (an expiry is rounded down to its bucket, never up).
    `created` None: a session that keeps nothing (nothing to measure)."""
    line, session, limits, version, profile = taken.line, taken.session, taken.limits, taken.version, taken.profile
    audio_expires, transcript_expires = taken.audio_expires, taken.transcript_expires
    if limits is None:
        return [Problem(f"session {session} was taken under policy {version[:12]}, which no policy.adopted before it names", line, session)]
    if profile not in limits:
        return [Problem(f"session {session} is {profile}'s, a profile policy {version[:12]} does not have", line, session)]
    if created is None:
        return []
    start, problems = datetime.fromisoformat(created), []
    for kind, expires, seconds in (
        (DataKind.AUDIO, audio_expires, limits[profile][0]),
        (DataKind.TRANSCRIPT, transcript_expires, limits[profile][1]),
    ):
        end = _instant(expires)
        if end is not None and end > start + timedelta(seconds=seconds):
            allowed = "nothing" if seconds <= 0 else f"{seconds} s"
            problems.append(
                Problem(
                    f"session {session}: its {kind} is kept until {end.isoformat()}, longer than policy {version[:12]} lets {profile} "
                    f"keep it ({allowed} from {start.isoformat()})",
                    line,
                    session,
                )
            )
    return problems


def _sealed_start(session: str, sealed: str, data: KeystoreData | None, result: Verification) -> str | None:
    """A session's start from its sealed details, opened with the key its keystore row holds;
    None, counted as forgotten, once the row is gone: it was forgotten with the data."""
    entry = data.sessions.get(session) if data is not None else None
    details = open_sealed(sealed, entry.details, session, "session.created") if entry is not None else None
    created = details.get("created") if details is not None else None
    if isinstance(created, str) and _instant_or_none(created) is not None:
        return created
    if entry is not None:
        result.problems.append(
            Problem(f"session {session}: its sealed details do not open with the key the keystore holds for it", None, session)
        )
        return iso_utc(entry.created)
    result.details_forgotten += 1
    return None


def _instant_or_none(text: str) -> datetime | None:
    """A sealed instant as read (sealed fields are checked here, not by chain.scan)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _instant(value: str | None) -> datetime | None:
    """An instant chain.scan checked (ISO 8601, with a zone), or None (not kept)."""
    return None if value is None else datetime.fromisoformat(value)


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
    for taken, sealed in scan.sealed:
        result.problems.extend(_within_policy(taken, _sealed_start(taken.session, sealed, data, result)))
    if data is None or keystore is None:
        return
    identities = [identity for bucket in data.buckets.values() for identity in keystore.identities(bucket)]
    if keystore.root_lost:
        result.problems.append(
            Problem(
                f"the vault's root key is gone ({keystore.root_lost}), so nothing retained can be "
                "opened; the agent records the loss at its next start"
            )
        )
    for entry in sorted(data.sessions.entries(), key=lambda s: s.created):
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
    for profile in sorted(data.voices):
        voice_event = scan.voices.get(profile)
        if voice_event is None:
            result.problems.append(Problem(f"the voiceprint of {profile} is held by the device but its enrolment was never logged"))
        elif not voice_event[1]:
            message = f"the voiceprint of {profile} is logged as shredded but the device still holds it; the next purge finishes it"
            result.problems.append(Problem(message, voice_event[0]))
    live = [e for e in data.sessions.entries() if e.audio_bucket or e.transcript_bucket]
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
