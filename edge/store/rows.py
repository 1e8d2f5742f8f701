"""How keystore v2 seals each database row (docs/FORMATS.md §3).

Every row that says anything about a recording is ciphertext:
- a bucket row (its profile, kind, expiry, public key and private identity) is sealed
  under a key derived from the root, so the ratchet that replaces the root after a shred
  makes every older copy of every bucket row unreadable; re-sealing costs O(live buckets);
- a session row (profile, times, buckets) is sealed under a key derived from the identity
  of one of its own buckets, the one that dies last (the "sealer"), so destroying that
  identity makes the row unreadable wherever a copy of it lies (WAL, free pages, backups);
- the state row (when each profile was last heard, pending forgets, enrolled voiceprints)
  is sealed under the root, so a voiceprint removed before a ratchet opens nowhere after it.

One opaque error (InvalidTag) for every row that does not open, as in pyca's fernet.
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import fields
from datetime import datetime
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.instants import iso_utc
from edge.store.buckets import bucket_id
from edge.store.records import Bucket, BucketBound, ClockRewind, PendingForget, SessionEntry, Voiceprint
from edge.values import DataKind, TagRule

NONCE = 12
LOOKUP_BYTES = 16


def derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=purpose).derive(secret)


def seal(key: ChaCha20Poly1305, plaintext: bytes, context: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + key.encrypt(nonce, plaintext, context)


def unseal(key: ChaCha20Poly1305, sealed: bytes, context: bytes) -> bytes:
    """The plaintext, or InvalidTag for anything that is not a row sealed here with this key."""
    if len(sealed) < NONCE + 16:
        raise InvalidTag()
    return key.decrypt(sealed[:NONCE], sealed[NONCE:], context)


class RootKeys:
    """The keys one root yields: bucket rows, the state row, and bucket lookup tags."""

    def __init__(self, root: bytes) -> None:
        self.root = root
        self._buckets = ChaCha20Poly1305(derive(root, b"edge/v2 bucket row"))
        self._state = ChaCha20Poly1305(derive(root, b"edge/v2 state row"))
        self._lookup = derive(root, b"edge/v2 bucket lookup")

    def lookup(self, bucket_id: str) -> bytes:
        """The bucket's index key: finds a bucket by id without storing the id (it names a
        profile and an expiry) in the clear."""
        return hmac.new(self._lookup, bucket_id.encode(), sha256).digest()[:LOOKUP_BYTES]

    def seal_bucket(self, handle: int, bucket: Bucket) -> bytes:
        return seal(self._buckets, _json(bucket_document(bucket)), b"edge/v2 bucket %d" % handle)

    def open_bucket(self, handle: int, sealed: bytes) -> Bucket:
        return bucket_from(json.loads(unseal(self._buckets, sealed, b"edge/v2 bucket %d" % handle)))

    def seal_state(self, plaintext: bytes) -> bytes:
        return seal(self._state, plaintext, b"edge/v2 state")

    def open_state(self, sealed: bytes) -> bytes:
        return unseal(self._state, sealed, b"edge/v2 state")


def session_key(identity_secret: bytes) -> ChaCha20Poly1305:
    """The key of the session rows a bucket seals: it lives and dies with the bucket's identity."""
    return ChaCha20Poly1305(derive(identity_secret, b"edge/v2 session row"))


def session_context(session_id: str, sealer: int) -> bytes:
    return f"edge/v2 session {session_id} {sealer}".encode()


# -- JSON of the records ------------------------------------------------------------------


def bucket_document(bucket: Bucket) -> dict[str, Any]:
    return {
        "id": bucket.id,
        "profile": bucket.profile,
        "kind": str(bucket.kind),
        "expires": iso_utc(bucket.expires),
        "recipient": bucket.recipient,
        "secret": bucket.secret.hex(),
        "retiring": bucket.retiring_identity.hex() if bucket.retiring_identity is not None else None,
    }


def bucket_from(document: dict[str, Any]) -> Bucket:
    retiring = document["retiring"]
    return Bucket(
        id=document["id"],
        profile=document["profile"],
        kind=DataKind(document["kind"]),
        expires=datetime.fromisoformat(document["expires"]),
        recipient=document["recipient"],
        secret=bytes.fromhex(document["secret"]),
        retiring_identity=bytes.fromhex(retiring) if retiring is not None else None,
    )


_DERIVED = ("id", "audio_shredded", "transcript_shredded")
"""Not in the sealed row: the id is the row's key; what was shredded, its clear columns say."""
_SESSION_FIELDS = tuple(f.name for f in fields(SessionEntry) if f.name not in _DERIVED)
_TIMES = ("created", "audio_expires", "transcript_expires")


def session_document(entry: SessionEntry) -> bytes:
    document = {name: getattr(entry, name) for name in _SESSION_FIELDS}
    for kind, shredded in ((DataKind.AUDIO, entry.audio_shredded), (DataKind.TRANSCRIPT, entry.transcript_shredded)):
        if document[f"{kind}_bucket"] is None and shredded is not None:  # a row sealed again keeps saying so
            document[f"{kind}_bucket"], document[f"{kind}_expires"] = bucket_id(entry.profile, kind, shredded), shredded
    for name in _TIMES:
        document[name] = iso_utc(document[name])
    document["rule"] = str(entry.rule)
    return _json(document)


def session_from(session_id: str, plaintext: bytes, audio_live: bool, transcript_live: bool) -> SessionEntry:
    """A session row's record; a bucket already shredded is no longer the session's (the
    row's clear columns say which are live, so a shred never has to re-seal a row)."""
    document = json.loads(plaintext)
    for name in _TIMES:
        if document[name] is not None:
            document[name] = datetime.fromisoformat(document[name])
    document["rule"] = TagRule(document["rule"])
    if not audio_live:
        if document["audio_bucket"] is not None:
            document["audio_shredded"] = document["audio_expires"]
        document["audio_bucket"] = document["audio_expires"] = None
    if not transcript_live:
        if document["transcript_bucket"] is not None:
            document["transcript_shredded"] = document["transcript_expires"]
        document["transcript_bucket"] = document["transcript_expires"] = None
    return SessionEntry(id=session_id, **document)


State = tuple[
    dict[str, datetime],
    dict[str, PendingForget],
    dict[str, Voiceprint],
    datetime | None,
    ClockRewind | None,
    datetime | None,
    BucketBound | None,
]
"""The state row: when each profile was last heard, pending forgets, voiceprints by profile,
when the latest forget was requested, the latest rewind of the trusted clock, when guest
mode ends (a spoken command; None: off), and the bound on the buckets' expiries (None:
unknown, every bucket row is opened)."""


def state_document(
    last_seen: dict[str, datetime],
    forgets: dict[str, PendingForget],
    voices: dict[str, Voiceprint] | None = None,
    last_forget: datetime | None = None,
    rewind: ClockRewind | None = None,
    guest_until: datetime | None = None,
    bound: BucketBound | None = None,
) -> bytes:
    document: dict[str, Any] = {
        "last_seen": {name: iso_utc(instant) for name, instant in sorted(last_seen.items())},
        "forgets": [pending.to_json() for _, pending in sorted(forgets.items())],
        "voices": [voice.to_json() for _, voice in sorted((voices or {}).items())],
        "last_forget": iso_utc(last_forget),
    }
    if rewind is not None:  # absent until the first rewind
        document["rewind"] = rewind.to_json()
    if guest_until is not None:  # absent while guest mode is off
        document["guest_until"] = iso_utc(guest_until)
    if bound is not None:  # absent: unknown (an older edge wrote the row last), so every bucket is checked
        document["buckets"] = bound.to_json()
    return _json(document)


def state_from(plaintext: bytes) -> State:
    document = json.loads(plaintext)
    last_seen = {str(name): datetime.fromisoformat(instant) for name, instant in document["last_seen"].items()}
    forgets = [PendingForget.from_json(f) for f in document["forgets"]]
    voices = [Voiceprint.from_json(v) for v in document.get("voices", ())]  # absent before voices existed
    last_forget = document.get("last_forget")  # absent before voices existed
    forgot = datetime.fromisoformat(last_forget) if last_forget else None
    rewind = ClockRewind.from_json(document["rewind"]) if document.get("rewind") else None
    guest_until = datetime.fromisoformat(document["guest_until"]) if document.get("guest_until") else None
    bound = _bound(document.get("buckets"))
    return last_seen, {f.request: f for f in forgets}, {v.profile: v for v in voices}, forgot, rewind, guest_until, bound


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _bound(document: Any) -> BucketBound | None:
    """The state row's bound on the buckets, or None (every row is then opened) when it is
    absent or not one that can be compared with the trusted clock: a bound that made every due
    check fail would stop every shred."""
    if not document:
        return None
    try:
        bound = BucketBound.from_json(document)
    except (KeyError, TypeError, ValueError):
        return None
    return bound if bound.earliest is None or bound.earliest.tzinfo is not None else None
