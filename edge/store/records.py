"""The keystore's records: what exists and when it dies.

A session (profile, tagging rule, creation, absolute expiry instants, buckets), a
bucket (its public key and private identity), an enrolled voice, a forget request
not yet fulfilled, and the latest rewind of the trusted clock.
How they are stored and sealed is edge.store.rows' and edge.store.tables'.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge.instants import iso_utc
from edge.values import DataKind, TagRule


@dataclass(frozen=True)
class Bucket:
    id: str
    profile: str
    kind: DataKind
    expires: datetime
    """When this bucket's key must be destroyed (UTC)."""
    recipient: str
    """The bucket's age public key (age1...): all a recorder needs to seal."""
    secret: bytes = field(repr=False)
    """The bucket's age identity (32 bytes): only in memory and in its sealed row."""
    retiring_identity: bytes | None = field(default=None, repr=False)
    """While the bucket is re-keyed (forgetting one of its sessions): the previous identity.
    Destroyed, with a ratchet, once every file is re-keyed."""


@dataclass(frozen=True)
class SessionEntry:
    id: str
    profile: str
    rule: TagRule
    """How the profile was chosen."""
    child: bool
    """Whether the profile was a child profile when the session was made."""
    created: datetime
    audio_expires: datetime | None
    """None: audio not kept (or already shredded)."""
    transcript_expires: datetime | None
    """None: transcript not kept (or already shredded)."""
    audio_bucket: str | None
    transcript_bucket: str | None
    state: str = "recording"
    """"recording" until the session ended cleanly, then "complete"."""
    seconds: float = 0.0
    """Length of the recorded audio."""
    audio_shredded: datetime | None = None
    """Set when audio was kept and is shredded now: the expiry it had (derived from the
    sealed row and its clear columns; never stored)."""
    transcript_shredded: datetime | None = None
    """The same for the transcript."""
    details: str | None = None
    """The key (hex) its audit lines' personal details are sealed under (edge.store.details):
    it lives only in this row, so it goes with the session's last data. None in rows older
    than sealed details."""

    def buckets(self) -> tuple[str | None, str | None]:
        return self.audio_bucket, self.transcript_bucket


@dataclass(frozen=True)
class PendingForget:
    """A forget request whose sessions have left the keystore but whose keys may not all be
    destroyed yet (write-ahead): whatever a crash interrupts, the next sweep or forget finishes."""

    request: str
    selector: str
    sessions: tuple[str, ...]
    """The sessions forgotten."""
    buckets: dict[str, tuple[str, ...]]
    """Buckets to destroy whole, each with the sessions whose data was in it."""
    rekeyed: tuple[str, ...]
    """Buckets re-keyed because some (not all) of their sessions were forgotten."""
    voices: tuple[str, ...] = ()
    """Profiles whose voiceprint the request forgot (already gone from the keystore)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "selector": self.selector,
            "sessions": list(self.sessions),
            "buckets": {bucket: list(members) for bucket, members in sorted(self.buckets.items())},
            "rekeyed": list(self.rekeyed),
            "voices": list(self.voices),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> PendingForget:
        return cls(
            str(document["request"]),
            str(document["selector"]),
            tuple(map(str, document["sessions"])),
            {str(bucket): tuple(map(str, members)) for bucket, members in document["buckets"].items()},
            tuple(map(str, document["rekeyed"])),
            tuple(map(str, document.get("voices", ()))),  # absent in keystores written before voices
        )


@dataclass(frozen=True)
class Voiceprint:
    """An enrolled voice: the speaker encoder's embedding of a household member's speech,
    never the audio it was made from. Biometric data (a child's, under the COPPA Rule): it
    lives only in the keystore's state row, sealed under the root, so the ratchet that
    follows its removal destroys every copy."""

    profile: str
    enrolled: datetime
    heard: datetime
    """When the profile was last heard (enrolment, then each session): its inactive_after
    counts from here, so the print of someone who left the household is shredded too."""
    seconds: float
    """Seconds of speech (long silences trimmed) it was made from."""
    utterances: int
    consent: bool
    """Whether a parent gave consent at enrolment (`--consent`; required for a child)."""
    encoder: str
    """Which encoder made it (its weights' digest): prints of different encoders do not compare."""
    vector: bytes = field(repr=False)
    """256 float32 numbers, little-endian, of unit length."""

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "enrolled": iso_utc(self.enrolled),
            "heard": iso_utc(self.heard),
            "seconds": self.seconds,
            "utterances": self.utterances,
            "consent": self.consent,
            "encoder": self.encoder,
            "vector": base64.b64encode(self.vector).decode(),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Voiceprint:
        return cls(
            profile=str(document["profile"]),
            enrolled=datetime.fromisoformat(document["enrolled"]),
            heard=datetime.fromisoformat(document["heard"]),
            seconds=float(document["seconds"]),
            utterances=int(document["utterances"]),
            consent=bool(document["consent"]),
            encoder=str(document["encoder"]),
            vector=base64.b64decode(document["vector"], validate=True),
        )


@dataclass(frozen=True)
class ClockRewind:
    """The latest `edge-agent clock rewind` (edge.retention.rewind): every instant in the
    keystore moved back by `seconds` in the commit that recorded this. `finished` once the
    clock's mark was moved back too and the rewind logged; a crash before that is finished
    by the next purge, forget or agent start, from this record. Kept afterwards, so a
    process whose clock still reads ahead (it started before the rewind) finds out at its
    next sweep."""

    request: str
    seconds: int
    before: datetime
    """The trusted time it was brought back from."""
    to: datetime
    """The trusted time it was brought back to: the wall clock's, NTP-synchronised."""
    monotonic: float
    """time.monotonic(), the boot and the kernel's uptime at `to`: the clock's new mark."""
    boot: str
    uptime: float | None
    buckets: int
    sessions: int
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "seconds": self.seconds,
            "from": iso_utc(self.before),
            "to": iso_utc(self.to),
            "monotonic": self.monotonic,
            "boot": self.boot,
            "uptime": self.uptime,
            "buckets": self.buckets,
            "sessions": self.sessions,
            "finished": self.finished,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ClockRewind:
        uptime = document["uptime"]
        return cls(
            request=str(document["request"]),
            seconds=int(document["seconds"]),
            before=datetime.fromisoformat(document["from"]),
            to=datetime.fromisoformat(document["to"]),
            monotonic=float(document["monotonic"]),
            boot=str(document["boot"]),
            uptime=float(uptime) if uptime is not None else None,
            buckets=int(document["buckets"]),
            sessions=int(document["sessions"]),
            finished=bool(document["finished"]),
        )


@dataclass(frozen=True)
class BucketBound:
    """What the state row says of the buckets, so the due check at every start and sweep need
    not open every bucket row (O(buckets)): no live bucket whose handle is at most `upto`
    expires before `earliest` (None: there is none), and none of them has a retiring identity
    unless `rekeying`. Buckets with a higher handle (made since, by any edge) are opened.

    A bound, not a copy: a shred leaves it low (one more full check, which writes it exact);
    every write of a bucket up to `upto` folds into it in the same commit."""

    earliest: datetime | None
    upto: int
    rekeying: bool

    def to_json(self) -> dict[str, Any]:
        return {"earliest": iso_utc(self.earliest), "upto": self.upto, "rekeying": self.rekeying}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> BucketBound:
        earliest = document["earliest"]
        return cls(
            earliest=datetime.fromisoformat(earliest) if earliest is not None else None,
            upto=int(document["upto"]),
            rekeying=bool(document["rekeying"]),
        )

    def folded(self, handle: int, bucket: Bucket) -> BucketBound:
        """The bound once `bucket` (row `handle`) is written. The row right after `upto` (a new
        bucket: handles are never reused, so no other row lies between) joins it."""
        if handle > self.upto + 1:
            return self  # rows between were made without it: the check opens those above `upto`
        if handle == self.upto + 1:
            earliest = bucket.expires if self.earliest is None else min(self.earliest, bucket.expires)
            return BucketBound(earliest, handle, self.rekeying or bucket.retiring_identity is not None)
        earliest = bucket.expires if self.earliest is None else min(self.earliest, bucket.expires)
        return BucketBound(earliest, self.upto, self.rekeying or bucket.retiring_identity is not None)
