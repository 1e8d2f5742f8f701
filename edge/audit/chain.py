"""The line-by-line half of `audit verify`: each line parsed and re-encoded by the reference
encoder, its hash, its place in the chain, its checkpoint; and what the data check needs from it.

It runs over any run of whole lines that starts where another ends (the whole log, or one
chunk of it in a worker process; see parallel.py), so it keeps no state but a `Chain` and
reports what the data check needs as small `ScanOp` values, applied in file order by the
caller. Everything here is picklable and free of the keystore.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from cryptography.exceptions import InvalidSignature

from edge.audit.log import ZERO_HASH, canonical, checkpoint_text, public_key_from_hex
from edge.events import (
    DETAILS,
    MUST_BE_SIGNED,
    AuditEvent,
    CheckpointSigned,
    EventError,
    Export,
    ForgetFulfilled,
    ForgetRequested,
    LogRecovered,
    LogUnsigned,
    PolicyAdopted,
    RootLost,
    SessionCreated,
    Shred,
    VoiceEnrolled,
    VoiceForgotten,
    WitnessCosigned,
)
from edge.values import Purpose

_KEYS = {"seq", "wall", "mono", "boot", "type", "fields", "prev", "hash"}
_HASH_MEMBER = b',"hash":"'
_BLOCK = 1 << 20
"""Bytes read at a time; the lines of one block are parsed and re-encoded together."""
_FIRST_KEY = b'{"boot":'
"""How the encoding of every well-formed entry begins."""
_NOT_AN_ENTRY = "not a valid audit entry (damaged, or cut off mid-line)"


@dataclass
class Problem:
    message: str
    line: int | None = None
    session: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return where + self.message


class Seed(NamedTuple):
    """What line n-1 hands to line n: its hash (line n's `prev`) and its digest (what a
    checkpoint on line n signs). Empty before line 1."""

    previous: str
    digest: bytes


GENESIS = Seed(ZERO_HASH, b"")


@dataclass
class Chain:
    """What the check carries from line to line; a chunk's, merged into the whole log's."""

    first: int = 1
    """Line number of the first digest in `hashes`."""
    hashes: bytearray = field(default_factory=bytearray)
    """Every verified line's hash, 32 bytes each (for checkpoints and witnesses)."""
    previous: str = ZERO_HASH
    log_id: str | None = None
    public_key: str | None = None
    checkpoints: int = 0
    last_checkpoint: int = 0
    """Line of the last checkpoint (0: none yet)."""
    must_sign: int | None = None
    """The first line after the last checkpoint that a checkpoint must cover (a shred, a
    forget fulfilled, a stop), if any."""

    @classmethod
    def after(cls, seed: Seed, line: int, log_id: str | None = None, public_key: str | None = None) -> Chain:
        """A chain whose next line is `line`, the line before it having left `seed`."""
        return cls(line - len(seed.digest) // 32, bytearray(seed.digest), seed.previous, log_id, public_key)

    @property
    def next_line(self) -> int:
        return self.first + len(self.hashes) // 32

    def hash_of(self, seq: int) -> str:
        return self.hashes[32 * (seq - self.first) : 32 * (seq - self.first + 1)].hex()

    def verified(self) -> int:
        """Lines verified, from line 1 (the whole log's chain)."""
        return self.next_line - 1

    def without_seed(self, seed: Seed) -> Chain:
        """This chunk's own lines: the seed's digest was only there for a checkpoint on its first line."""
        skip = len(seed.digest)
        return replace(self, first=self.first + skip // 32, hashes=self.hashes[skip:])

    def extend(self, chunk: Chain) -> None:
        """Append the lines of the chunk that follows (checked from this chain's end)."""
        assert chunk.first == self.next_line, (chunk.first, self.next_line)
        self.hashes += chunk.hashes
        self.previous, self.log_id, self.public_key = chunk.previous, chunk.log_id, chunk.public_key
        self.checkpoints += chunk.checkpoints
        if chunk.last_checkpoint:
            self.last_checkpoint, self.must_sign = chunk.last_checkpoint, chunk.must_sign
        elif self.must_sign is None:
            self.must_sign = chunk.must_sign


# -- what the data check needs, entry by entry ----------------------------------------------
# The data check's state (sessions created, data gone, open forget requests) depends on the
# order of the whole log, so it is kept by the caller; these are its inputs, with every field
# already checked for its type (a malformed one is a "malformed", named by its line). Plain
# tagged tuples: a worker sends one for every other line, and they pickle fastest.

Created = tuple[Literal["created"], int, str, str | None, str | None, bool]
"""line, session, audio_expires, transcript_expires (ISO 8601 with a zone; None: not kept), child"""
Gone = tuple[Literal["gone"], list[str], str | None]
"""sessions, kind (None: every kind)"""
Shredded = tuple[Literal["shredded"], int | float]
"""late_seconds"""
Requested = tuple[Literal["requested"], int, str]
"""line, request"""
Fulfilled = tuple[Literal["fulfilled"], str]
"""request"""
Recovered = tuple[Literal["recovered"]]
Unsigned = tuple[Literal["unsigned"], int]
"""lines found unsigned, their writer gone, and signed by a later one"""
LostRoot = tuple[Literal["root lost"]]
TrainingExport = tuple[Literal["training export"], int, str | int | float | bool | None]
"""line, the exported session as logged (any hashable JSON value)"""
Cosigned = tuple[Literal["cosigned"], int, WitnessCosigned]
"""line, the cosignature a witness returned (checked against the log's tree by verify)"""
Malformed = tuple[Literal["malformed"], int, str]
"""line, message"""
Voice = tuple[Literal["voice"], int, str, bool]
"""line, profile, whether its voiceprint is held from then on (enrolled) or not (forgotten)"""
Adopted = tuple[Literal["adopted"], int, str, dict[str, tuple[int, int]]]
"""line, policy version, per profile (audio seconds, transcript seconds) it allows"""
Taken = tuple[Literal["taken"], int, str, str, str, str | None, str | None, str | None, str | None]
"""line, session, policy version, profile, created (None: sealed, or a session that keeps
nothing), audio_expires, transcript_expires (as in Created), sealed (its sealed details)"""
ScanOp = (
    Created
    | Gone
    | Shredded
    | Requested
    | Fulfilled
    | Recovered
    | Unsigned
    | LostRoot
    | TrainingExport
    | Voice
    | Adopted
    | Taken
    | Cosigned
    | Malformed
)
Sink = Callable[[ScanOp], None]
_SCANNED: dict[str, type[AuditEvent]] = {
    cls.event_type: cls
    for cls in (
        SessionCreated,
        Shred,
        ForgetRequested,
        ForgetFulfilled,
        LogRecovered,
        LogUnsigned,
        RootLost,
        Export,
        VoiceEnrolled,
        VoiceForgotten,
        PolicyAdopted,
        WitnessCosigned,
    )
}
"""The events the data check follows (the others are checked for their place in the chain only)."""


def scan(line: int, entry: dict[str, Any], sink: Sink) -> None:
    """Hand `sink` what `entry` tells the data check. Hashes are unkeyed, so anyone can chain
    a line: a missing or malformed field is a problem named by its line, never a crash."""
    kind = entry["type"]
    cls = _SCANNED.get(kind)
    if cls is None:
        return
    try:
        _scan(line, cls.parse(entry["fields"]), sink)
    except EventError as exc:
        sink(("malformed", line, f"a {kind!r} event with missing or malformed fields ({exc})"))


def _sealed_shape(event: AuditEvent) -> None:
    """`details` is 1 exactly when `sealed` is there, and a sealed field is not also in clear."""
    sealed, details = getattr(event, "sealed", None), getattr(event, "details", None)
    if (sealed is None) != (details is None) or details not in (None, DETAILS):
        raise EventError(event.event_type, "details", f"'details' must be {DETAILS} with 'sealed' and absent without it")
    if sealed is not None and getattr(event, "created", None) is not None:
        raise EventError(event.event_type, "created", "'created' in clear beside 'sealed', which holds it")


def _scan(line: int, event: AuditEvent, sink: Sink) -> None:
    _sealed_shape(event)
    match event:
        case SessionCreated():
            sink(("created", line, event.session, event.audio_expires, event.transcript_expires, event.child))
            if event.policy is not None:  # sessions logged before the written policy carry none
                keeps = event.audio_expires is not None or event.transcript_expires is not None
                if event.created is None and (event.sealed is None) == keeps:  # a kept session's start is in one of them
                    raise EventError(event.event_type, "created", "'created'" if event.details is None else "'sealed'")
                sink(
                    (
                        "taken",
                        line,
                        event.session,
                        event.policy,
                        event.profile,
                        event.created,
                        event.audio_expires,
                        event.transcript_expires,
                        event.sealed,
                    )
                )
        case PolicyAdopted(version=version, terms=terms):
            sink(("adopted", line, version, _limits(terms)))
        case Shred(sessions=sessions, kind=kind, late_seconds=late):
            if sessions:
                sink(("gone", sessions, kind))
            sink(("shredded", late))
        case ForgetRequested(request=request):
            sink(("requested", line, request))
        case ForgetFulfilled(request=request, sessions=sessions):
            sink(("fulfilled", request))
            sink(("gone", sessions, None))
        case LogRecovered():
            sink(("recovered",))
        case LogUnsigned(first=first, lines=lines):
            if lines < 1 or first + lines != line:
                raise EventError(event.event_type, "first", "first and lines do not name the lines just before it")
            sink(("unsigned", lines))
        case RootLost():
            sink(("root lost",))
        case VoiceEnrolled(profile=profile) | VoiceForgotten(profile=profile):
            sink(("voice", line, profile, isinstance(event, VoiceEnrolled)))
        case Export(purpose=Purpose.TRAINING, session=session):
            sink(("training export", line, session))
        case WitnessCosigned():
            sink(("cosigned", line, event))


def _limits(terms: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Per profile of an adopted policy's terms: how long it may keep audio and transcripts (s)."""
    limits = {}
    profiles = terms.get("profiles")
    if not isinstance(profiles, dict):
        raise EventError(PolicyAdopted.event_type, "terms", "terms has no profiles object")
    for name, profile in profiles.items():
        audio = profile.get("audio_seconds") if isinstance(profile, dict) else None
        transcript = profile.get("transcript_seconds") if isinstance(profile, dict) else None
        if type(audio) is not int or type(transcript) is not int:
            raise EventError(PolicyAdopted.event_type, "terms", "a profile's audio_seconds or transcript_seconds is not a whole number")
        limits[name] = (audio, transcript)
    return limits


# -- the chain -------------------------------------------------------------------------------


def check_range(fd: int, start: int, end: int, chain: Chain, sink: Sink) -> Problem | None:
    """Check the lines in bytes [start, end) of the log (whole lines, the first being
    `chain.next_line`) and feed `sink` what each entry tells the data check. Stops at the
    first bad line and names it."""
    for block in _blocks(fd, start, end):
        problem = _check_block(block, chain, sink)
        if problem is not None:
            return problem
    return None


def _blocks(fd: int, start: int, end: int) -> Iterator[bytes]:
    """The lines in [start, end), some at a time, joined by newlines (no final newline). A last
    line without its newline (cut off mid-write) is a line too, as when iterating a file."""
    parts: list[bytes] = []  # of a line longer than a block: joined once, when it ends
    while start < end:
        data = os.pread(fd, min(_BLOCK, end - start), start)
        if not data:
            break  # the file shrank under us: what is left of the last line is still a line
        start += len(data)
        newline = data.rfind(b"\n")
        if newline < 0:
            parts.append(data)
            continue
        parts.append(data[:newline])
        yield b"".join(parts)
        parts = [data[newline + 1 :]]
    tail = b"".join(parts)
    if tail:
        yield tail


def _check_block(block: bytes, chain: Chain, sink: Sink) -> Problem | None:
    """One canonical re-encode for the whole block; line by line only when that fails, to name
    the first bad line."""
    raws = block.split(b"\n")
    entries = _canonical_entries(block)
    if entries is None:
        return _check_one_by_one(raws, chain, sink)
    number = chain.next_line
    for raw, entry in zip(raws, entries, strict=True):
        problem = _check_entry(number, raw, entry, chain)
        if problem is not None:
            return problem
        scan(number, entry, sink)
        number += 1
    return None


def _check_one_by_one(raws: list[bytes], chain: Chain, sink: Sink) -> Problem | None:
    for raw in raws:
        number = chain.next_line
        entry, problem = _parse_line(number, raw)
        problem = problem or _check_entry(number, raw, entry, chain)
        if problem is not None:
            return problem
        scan(number, entry, sink)
    return None


def _canonical_entries(block: bytes) -> list[Any] | None:
    """The block's entries, if every line is exactly the reference encoding of a well-formed
    entry; else None (the caller then goes line by line). One parse and one re-encode for the
    whole block: its lines joined by commas, as a JSON list.

    That the n entries line up with the n lines is counted, not assumed (otherwise a value
    could straddle two lines, and a line hold two values): the encoding of a well-formed entry
    begins with {"boot": (its smallest key), so if the block holds that text n times, each at
    the start of a line, the n entries can only begin where the n lines do."""
    lines = block.count(b"\n") + 1
    if not block.startswith(_FIRST_KEY) or block.count(b"\n" + _FIRST_KEY) != lines - 1 or block.count(_FIRST_KEY) != lines:
        return None
    try:
        joined = "[" + block.decode("ascii").replace("\n", ",") + "]"  # canonical lines are ASCII (\u escapes)
        entries = json.loads(joined)
        if len(entries) != lines or not all(map(_well_formed, entries)):
            return None
        encoded = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=True, check_circular=False)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return entries if encoded == joined else None


def _parse_line(number: int, raw: bytes) -> tuple[Any, Problem | None]:
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        entry = None
    if not _well_formed(entry):
        return None, Problem(_NOT_AN_ENTRY, number)
    if canonical(entry) != raw:
        return None, Problem("not in canonical form: the line was edited", number)
    return entry, None


def _well_formed(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and entry.keys() == _KEYS
        and isinstance(entry["fields"], dict)
        and type(entry["seq"]) is int
        and isinstance(entry["type"], str)
        and isinstance(entry["prev"], str)
        and isinstance(entry["hash"], str)
        and isinstance(entry["wall"], str)
    )


def content_hash(raw: bytes) -> bytes:
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


def _check_entry(number: int, raw: bytes, entry: dict[str, Any], chain: Chain) -> Problem | None:
    """The checks of a line that is a well-formed entry in canonical form."""
    try:
        digest = bytes.fromhex(entry["hash"])
    except (TypeError, ValueError):
        digest = b"?"
    if content_hash(raw) != digest:
        return Problem("its hash does not match its content: the line was edited", number)
    if entry["seq"] != number:
        return Problem(f"sequence number {entry['seq']} where {number} belongs: lines were deleted, duplicated or reordered", number)
    if entry["prev"] != chain.previous:
        return Problem(f"does not follow line {number - 1}: the chain is broken", number)
    kind = entry["type"]
    if number == 1:
        if kind != "log.created":
            return Problem("the log does not begin with its log.created entry", number)
        chain.log_id, chain.public_key = entry["fields"].get("log"), entry["fields"].get("public_key")
    if kind == "checkpoint":
        if not _checkpoint_ok(chain, entry, number):
            return Problem("checkpoint signature does not verify: forged or damaged", number)
        chain.checkpoints += 1
        chain.last_checkpoint, chain.must_sign = number, None
    elif kind in MUST_BE_SIGNED and chain.must_sign is None:
        chain.must_sign = number
    chain.hashes += digest
    chain.previous = entry["hash"]
    return None


def _checkpoint_ok(chain: Chain, entry: dict[str, Any], number: int) -> bool:
    """A checkpoint signs the line just before it, with the log's own key."""
    try:
        signed = CheckpointSigned.parse(entry["fields"])
        if signed.entries != number - 1 or chain.hash_of(signed.entries) != signed.head:
            return False
        text = checkpoint_text(chain.log_id or "", signed.entries, signed.head)
        public_key_from_hex(chain.public_key or "").verify(bytes.fromhex(signed.signature), text)
        return True
    except (ValueError, InvalidSignature):  # EventError is a ValueError, as a bad hex key or signature is
        return False


# -- where a chunk starts ------------------------------------------------------------------------


def seed_of(raw: bytes) -> Seed:
    """The seed line `raw` leaves for the next line, read from its bytes alone (what a worker
    starts a chunk from). Only meaningful if the line verifies, which its own chunk checks."""
    entry: Any = None
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    previous: str = entry["hash"] if _well_formed(entry) else ""
    return Seed(previous, content_hash(raw) or bytes(32))


def keys_of(raw: bytes) -> tuple[str | None, str | None]:
    """The log id and public key that line 1 (`raw`) names, as the check of line 1 takes them."""
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not _well_formed(entry):
        return None, None
    return entry["fields"].get("log"), entry["fields"].get("public_key")
