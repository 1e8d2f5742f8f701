"""Deletion certificates: what the audit log says was asked, destroyed, when and how, as one
small document signed with the log's own key (docs/FORMATS.md section 6b).

The certificate is derived from the log alone, so `audit verify --certificate` derives it
again from the log the verifier holds and compares: a certificate whose claims differ from
the log fails even when it is signed with the right key. Everything here is pure (no I/O):
the command reads the log and the files, and signs.

A certificate names the lines it certifies (seq, type, hash) and the first checkpoint
that covers them; it holds ids, profile names, times and counts, never transcript text,
audio or key material (as the log itself).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.audit.log import canonical
from edge.crypto.guarantee import GuaranteeLevel
from edge.events import (
    AgentStarted,
    AuditEvent,
    CheckpointSigned,
    EventError,
    ForgetFulfilled,
    ForgetRequested,
    LogCreated,
    PolicyAdopted,
    RootLost,
    SessionCreated,
    Shred,
    UnknownEvent,
    VaultMigrated,
    VoiceCommand,
    VoiceForgotten,
    read,
)
from edge.values import DataKind

FORMAT = "edge-deletion-certificate/v1"
TECHNIQUE = (
    "crypto-erase: each destroyed bucket's X25519 identity (the only key that opens its recordings or transcripts) "
    "was deleted from the keystore, and the vault's root key was ratcheted (a fresh root written, every remaining row "
    "sealed again under it, the old root overwritten), so no copy of the keystore opens with any key the device holds; "
    "a bucket a forget shares with sessions that stay is re-keyed instead (its files that stay sealed again to a new "
    "identity, the old one destroyed the same way); a voiceprint lives only in the keystore's state row and is destroyed by the same ratchet; the ciphertext files "
    "are then deleted"
)
UNCHECKED = ("issued", "words")
"""Members a verifier does not derive from the log (when it was issued; explanations in words)."""


class CertificateError(ValueError):
    """Why a certificate cannot be issued, or does not hold (one sentence a person can act on)."""


@dataclass(frozen=True)
class Scope:
    """What the certificate is asked for: exactly one of a forget request, a session, or
    every deletion done at or after an instant."""

    request: str | None = None
    session: str | None = None
    since: datetime | None = None

    def to_json(self) -> dict[str, str]:
        if self.request is not None:
            return {"request": self.request}
        if self.session is not None:
            return {"session": self.session}
        assert self.since is not None
        return {"since": self.since.isoformat()}

    @classmethod
    def parse(cls, data: Any) -> Scope:
        if isinstance(data, dict) and len(data) == 1:
            ((name, value),) = data.items()
            if isinstance(value, str):
                if name == "request":
                    return cls(request=value)
                if name == "session":
                    return cls(session=value)
                if name == "since":
                    try:
                        since = datetime.fromisoformat(value)
                    except ValueError:
                        since = None
                    if since is not None and since.tzinfo is not None:
                        return cls(since=since)
        raise CertificateError('scope: not one of {"request": ID}, {"session": ID}, {"since": ISO 8601 with a zone}')


@dataclass
class _Deletion:
    """One deletion as the log tells it: a forget request (from forget.requested to
    forget.fulfilled), or one scheduled shred or voiceprint purge."""

    by: str
    reason: str
    request: str | None
    selector: str
    asked: str | None
    root: dict[str, Any] | None
    lines: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    audio: int = 0
    transcripts: int = 0
    buckets: list[str] = field(default_factory=list)
    rekeyed: list[str] = field(default_factory=list)
    voiceprints: list[str] = field(default_factory=list)
    done: str | None = None
    """The wall time of its last line; None while a forget is not fulfilled."""

    def to_json(self) -> dict[str, Any]:
        return {
            "asked": {"by": self.by, "reason": self.reason, "request": self.request, "selector": self.selector, "at": self.asked},
            "destroyed": {
                "sessions": sorted(self.sessions),
                "audio": self.audio,
                "transcripts": self.transcripts,
                "buckets": sorted(self.buckets),
                "rekeyed": sorted(self.rekeyed),
                "voiceprints": sorted(self.voiceprints),
            },
            "done": self.done,
            "root": self.root,
            "lines": self.lines,
        }


@dataclass
class _Kept:
    """What session.created says a session keeps: per kind, its expiry (None: not kept)."""

    expires: dict[DataKind, str | None]


@dataclass
class _Reading:
    """Everything one pass over the log gathers for a certificate."""

    log: dict[str, str] | None = None
    deletions: list[_Deletion] = field(default_factory=list)
    open_forgets: dict[str, _Deletion] = field(default_factory=dict)
    sessions: dict[str, _Kept] = field(default_factory=dict)
    gone: set[tuple[str, DataKind]] = field(default_factory=set)
    checkpoints: list[tuple[int, CheckpointSigned]] = field(default_factory=list)
    root: dict[str, Any] | None = None
    lost: dict[str, tuple[int, str]] = field(default_factory=dict)
    """session -> (line, wall) of the root.lost that made what it kept unreadable."""
    spoken: dict[str, dict[str, Any]] = field(default_factory=dict)
    """request -> the line of the `voice.command` that made it (a forget asked by voice)."""


def build(entries: Iterable[Mapping[str, Any]], scope: Scope, issued: str, levels: Mapping[str, GuaranteeLevel]) -> dict[str, Any]:
    """The certificate body for `scope` from the log's entries (in file order, each a parsed
    line: seq, wall, type, fields, hash). CertificateError when there is nothing to certify
    yet, saying why (and, for a session still kept, until when)."""
    reading = _read(entries)
    if reading.log is None:
        raise CertificateError("the audit log does not begin with its log.created entry")
    chosen, pending = _select(reading, scope)
    last = max(line["seq"] for deletion in chosen for line in deletion["lines"])
    checkpoint = next(((seq, cp) for seq, cp in reading.checkpoints if cp.entries >= last), None)
    if checkpoint is None:
        raise CertificateError(
            f"line {last} is not yet covered by a signed checkpoint (its writer is still running); "
            "try again when it has finished, or sign the head with `edge-agent audit checkpoint`"
        )
    seq, signed = checkpoint
    backends = sorted({d["root"]["backend"] for d in chosen if d["root"] is not None})
    body: dict[str, Any] = {
        "format": FORMAT,
        "log": reading.log,
        "issued": issued,
        "scope": scope.to_json(),
        "deletions": chosen,
        "totals": {
            "deletions": len(chosen),
            "sessions": len({s for d in chosen for s in d["destroyed"]["sessions"]}),
            "audio": sum(d["destroyed"]["audio"] for d in chosen),
            "transcripts": sum(d["destroyed"]["transcripts"] for d in chosen),
            "buckets": sum(len(d["destroyed"]["buckets"]) for d in chosen),
            "voiceprints": sum(len(d["destroyed"]["voiceprints"]) for d in chosen),
        },
        "checkpoint": {"line": seq, "entries": signed.entries, "head": signed.head, "signature": signed.signature},
        "words": {
            "technique": TECHNIQUE,
            "guarantee": {name: levels[name].summary for name in backends if name in levels},
        },
    }
    if pending is not None:
        body["pending"] = pending
    return body


def encode(body: Mapping[str, Any]) -> bytes:
    """The file's exact bytes: the body's canonical JSON (as the audit log's lines) and a newline."""
    return canonical(dict(body)) + b"\n"


def decode(data: bytes) -> dict[str, Any]:
    """The body of a certificate file, which must be exactly `encode` of it."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise CertificateError("not JSON: not a deletion certificate") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CertificateError(f'not a deletion certificate: "format" is not "{FORMAT}"')
    if encode(body) != data:
        raise CertificateError("not in canonical form (the file was edited or reformatted)")
    return body


def check(data: bytes, signature: bytes, entries: Iterable[Mapping[str, Any]], levels: Mapping[str, GuaranteeLevel]) -> list[str]:
    """Why the certificate `data` (with its raw `signature`) does not hold against the log
    whose entries (parsed lines, in file order, of a log that verifies) are given; empty if
    it holds. In order: its form, its log and signature, the lines it names (there, with
    those hashes), its checkpoint, then every claim against what the log says."""
    try:
        body = decode(data)
        named, bound = lines_named(body)
        scope = Scope.parse(body.get("scope"))
    except CertificateError as exc:
        return [str(exc)]
    lines: dict[int, Mapping[str, Any]] = {}
    log: Any = None
    for entry in entries:
        if entry["seq"] > bound:
            break
        lines[entry["seq"]] = entry
        if entry["seq"] == 1 and entry["type"] == "log.created":
            log = {"id": entry["fields"].get("log"), "public_key": entry["fields"].get("public_key")}
    if body.get("log") != log:
        return [f"it is for log {_short(body.get('log'))}, but this log is {_short(log)} (another device's, or the log was replaced)"]
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(log["public_key"])).verify(signature, data)
    except (InvalidSignature, ValueError, TypeError):
        return [
            "its signature does not verify with this log's key: the certificate (or its .sig) was edited, or it was signed by another key"
        ]
    for seq, kind, digest in [*named, (bound, "checkpoint", "")]:
        found = lines.get(seq)
        if found is None:
            return [
                f"it certifies line {seq}, but the log has only {len(lines)} entries: the log was truncated "
                "(cut short, or replaced by an older copy) before the lines it certifies"
            ]
        if found["type"] != kind or (digest and not hmac.compare_digest(str(found["hash"]), digest)):
            return [f"line {seq}: the log's line is not the one certified (a {found['type']} with another hash): the log was rewritten"]
    signed = lines[bound]["fields"].get("entries")
    if type(signed) is not int or signed < named[-1][0]:
        return [f"line {bound}: its checkpoint does not cover the certified lines (it signs {signed} entries)"]
    try:
        derived = build(lines.values(), scope, str(body.get("issued")), levels)
    except CertificateError as exc:
        return [f"the log does not support it: {exc}"]
    return differences(body, derived)


def lines_named(body: Mapping[str, Any]) -> tuple[list[tuple[int, str, str]], int]:
    """(seq, type, hash) of every line the certificate certifies, in file order, and the line
    of its checkpoint (after them all); CertificateError if the body does not name them so."""
    try:
        named = [(line["seq"], line["type"], line["hash"]) for d in body["deletions"] for line in d["lines"]]
        checkpoint = body["checkpoint"]["line"]
    except (KeyError, TypeError):
        named, checkpoint = [], None
    if (
        not named
        or any(type(seq) is not int or seq < 1 or not isinstance(kind, str) or not isinstance(digest, str) for seq, kind, digest in named)
        or type(checkpoint) is not int
        or checkpoint <= max(seq for seq, _, _ in named)
    ):
        raise CertificateError("deletions[].lines or checkpoint.line: not the lines of a deletion certificate")
    return sorted(named), checkpoint


def differences(claimed: Mapping[str, Any], derived: Mapping[str, Any], at: str = "") -> list[str]:
    """Where the certificate's claims differ from what the log says, by path (the unchecked
    members left out), e.g. `deletions[0].destroyed.audio: the certificate says 3, the log says 1`."""
    found: list[str] = []
    for key in sorted(set(claimed) | set(derived)):
        if not at and key in UNCHECKED:
            continue
        path = f"{at}.{key}" if at else key
        _differ(claimed.get(key), derived.get(key), path, found)
    return found


def _differ(claimed: Any, derived: Any, path: str, found: list[str]) -> None:
    if isinstance(claimed, dict) and isinstance(derived, dict):
        found.extend(differences(claimed, derived, path))
    elif isinstance(claimed, list) and isinstance(derived, list) and len(claimed) == len(derived):
        for index, (a, b) in enumerate(zip(claimed, derived, strict=True)):
            _differ(a, b, f"{path}[{index}]", found)
    elif canonical({"v": claimed}) != canonical({"v": derived}):
        found.append(f"{path}: the certificate says {_short(claimed)}, the log says {_short(derived)}")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


# -- one pass over the log ------------------------------------------------------------------


def _read(entries: Iterable[Mapping[str, Any]]) -> _Reading:
    reading = _Reading()
    for entry in entries:
        try:
            event = read(entry["type"], entry["fields"])
        except (EventError, KeyError, TypeError):
            continue  # malformed: `audit verify` names it, and a certificate is only issued from a log that verifies
        _take(reading, entry, event)
    return reading


def _take(reading: _Reading, entry: Mapping[str, Any], event: AuditEvent | UnknownEvent) -> None:
    line = {"seq": entry["seq"], "type": entry["type"], "wall": entry["wall"], "hash": entry["hash"]}
    match event:
        case LogCreated():
            reading.log = {"id": event.log, "public_key": event.public_key}
        case CheckpointSigned():
            reading.checkpoints.append((entry["seq"], event))
        case PolicyAdopted():
            vault = event.terms.get("vault")
            if isinstance(vault, dict):
                reading.root = _root(vault.get("backend"), vault.get("crypto_erase"), vault.get("survives_reboot"))
        case AgentStarted():
            reading.root = _root(event.vault, event.level == "crypto-erase", event.survives_reboot)
        case RootLost():
            for session, kept in reading.sessions.items():
                if any(e is not None and (session, k) not in reading.gone for k, e in kept.expires.items()):
                    reading.lost.setdefault(session, (entry["seq"], entry["wall"]))
                    reading.gone.update((session, kind) for kind in DataKind)
        case VaultMigrated():
            reading.root = None  # the next start or policy says what the new vault guarantees
        case SessionCreated():
            reading.sessions[event.session] = _Kept({DataKind.AUDIO: event.audio_expires, DataKind.TRANSCRIPT: event.transcript_expires})
        case VoiceCommand(request=str() as request):
            reading.spoken[request] = line  # its forget.requested follows, with the same request
        case ForgetRequested():
            deletion = reading.open_forgets.get(event.request)
            if deletion is None:
                spoken = reading.spoken.pop(event.request, None)
                by = "voice" if spoken is not None else "command"  # a command or the control socket
                deletion = _Deletion(by, "forget", event.request, event.selector, entry["wall"], reading.root)
                deletion.lines.extend([spoken] if spoken is not None else [])
                reading.open_forgets[event.request] = deletion
            deletion.lines.append(line)
        case VoiceForgotten(reason="forget", request=str() as request) if request in reading.open_forgets:
            deletion = reading.open_forgets[request]
            deletion.lines.append(line)
            if event.profile not in deletion.voiceprints:
                deletion.voiceprints.append(event.profile)
        case VoiceForgotten(reason="inactive"):
            deletion = _Deletion("schedule", "inactive", None, f"the voiceprint of {event.profile}", event.heard, reading.root)
            deletion.lines.append(line)
            deletion.voiceprints.append(event.profile)
            deletion.done = entry["wall"]
            reading.deletions.append(deletion)
        case Shred(reason="forget") if reading.open_forgets:
            deletion = list(reading.open_forgets.values())[-1]  # a forget's shreds follow its request, under the lock
            deletion.lines.append(line)
        case Shred():
            deletion = _Deletion("schedule", str(event.reason), None, f"bucket {event.bucket}", event.expires, reading.root)
            deletion.lines.append(line)
            deletion.sessions = list(event.sessions)
            deletion.buckets = [event.bucket]
            _count(reading, deletion, event.sessions, (event.kind,))
            deletion.done = entry["wall"]
            reading.deletions.append(deletion)
        case ForgetFulfilled() if event.request in reading.open_forgets:
            deletion = reading.open_forgets.pop(event.request)
            deletion.lines.append(line)
            deletion.sessions = list(event.sessions)
            deletion.buckets = list(event.buckets)
            deletion.rekeyed = list(event.rekeyed)
            _count(reading, deletion, event.sessions, tuple(DataKind))
            deletion.done = entry["wall"]
            reading.deletions.append(deletion)


def _root(backend: Any, crypto_erase: Any, survives_reboot: Any) -> dict[str, Any] | None:
    if not isinstance(backend, str) or type(crypto_erase) is not bool or type(survives_reboot) is not bool:
        return None
    level = "crypto-erase" if crypto_erase else "logical-deletion"
    return {"backend": backend, "level": level, "survives_reboot": survives_reboot}


def _count(reading: _Reading, deletion: _Deletion, sessions: Iterable[str], kinds: tuple[DataKind, ...]) -> None:
    """Count, per kind, the sessions whose data of that kind this deletion destroyed: kept
    (session.created gave it an expiry) and not destroyed by an earlier line."""
    for session in sessions:
        kept = reading.sessions.get(session)
        for kind in kinds:
            if kept is None or kept.expires[kind] is None or (session, kind) in reading.gone:
                continue
            reading.gone.add((session, kind))
            if kind == DataKind.AUDIO:
                deletion.audio += 1
            else:
                deletion.transcripts += 1


# -- the scope ------------------------------------------------------------------------------


def _select(reading: _Reading, scope: Scope) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The deletions the scope asks for (and, for a session, what it still keeps)."""
    done = reading.deletions
    if scope.request is not None:
        chosen = [d for d in done if d.request == scope.request]
        if not chosen:
            if scope.request in reading.open_forgets:
                raise CertificateError(
                    f"forget request {scope.request} was never fulfilled: run the forget again, then ask for its certificate"
                )
            raise CertificateError(
                f"no forget request {scope.request} in the audit log (`edge-agent audit show --type forget.requested` lists them)"
            )
        return [d.to_json() for d in chosen], None
    if scope.session is not None:
        return _for_session(reading, scope.session)
    assert scope.since is not None
    since = scope.since
    chosen = [d for d in done if (at := _instant(d.done)) is not None and at >= since]
    if not chosen:
        raise CertificateError(f"nothing was deleted at or after {since.isoformat()}: there is nothing to certify")
    return [d.to_json() for d in chosen], None


def _instant(text: str | None) -> datetime | None:
    """A line's `wall` as an instant; None when it is not one with a zone (anyone can chain a
    line: such a deletion is in no period)."""
    try:
        instant = datetime.fromisoformat(text) if text is not None else None
    except ValueError:
        return None
    return instant if instant is not None and instant.tzinfo is not None else None


def _for_session(reading: _Reading, session: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    kept = reading.sessions.get(session)
    if kept is None:
        raise CertificateError(f"no session {session} in the audit log (`edge-agent audit show --type session.created` lists them)")
    chosen = [d for d in reading.deletions if session in d.sessions]
    pending = [
        {"kind": str(kind), "expires": expires}
        for kind, expires in kept.expires.items()
        if expires is not None and (session, kind) not in reading.gone
    ]
    if not chosen:
        if session in reading.lost:
            line, wall = reading.lost[session]
            raise CertificateError(
                f"session {session} was not deleted: what it kept became unreadable when the vault's root key was lost "
                f"(line {line}, {wall}: root.lost), which no deletion certificate covers"
            )
        if not pending:
            raise CertificateError(f"session {session} kept nothing: there is nothing to certify")
        until = ", ".join(f"its {p['kind']} is kept until {p['expires']}" for p in pending)
        raise CertificateError(
            f"session {session} is not shredded yet: {until} (it is shredded then; ask for its certificate after, "
            f"or forget it now: `edge-agent forget --session {session}`)"
        )
    return [d.to_json() for d in chosen], pending
