"""The keystore's records and their JSON codec: what exists and when it dies.

A document holds every session (profile, tagging rule, creation, absolute expiry
instants, buckets), every bucket (its public key, and its private identity sealed
under the root), when each profile was last heard, and forget requests not yet
fulfilled. Sealing, transactions and the ratchet are edge.store.keystore's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar

from edge.errors import KeystoreError
from edge.instants import iso_utc
from edge.values import DataKind, TagRule

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Bucket:
    id: str
    profile: str
    kind: DataKind
    expires: datetime
    """When this bucket's key must be destroyed (UTC)."""
    recipient: str
    """The bucket's age public key (age1...): all a recorder needs to seal."""
    sealed_identity: str
    """The bucket's age identity, sealed under the root (hex: nonce || ciphertext)."""
    retiring_identity: str | None = None
    """While the bucket is re-keyed (forgetting one of its sessions): the previous identity,
    sealed like `sealed_identity`. Destroyed, with a ratchet, once every file is re-keyed."""


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
    """None: audio not kept."""
    transcript_expires: datetime | None
    """None: transcript not kept."""
    audio_bucket: str | None
    transcript_bucket: str | None
    state: str = "recording"
    """"recording" until the session ended cleanly, then "complete"."""
    seconds: float = 0.0
    """Length of the recorded audio."""


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

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "selector": self.selector,
            "sessions": list(self.sessions),
            "buckets": {bucket: list(members) for bucket, members in sorted(self.buckets.items())},
            "rekeyed": list(self.rekeyed),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> PendingForget:
        return cls(
            str(document["request"]),
            str(document["selector"]),
            tuple(map(str, document["sessions"])),
            {str(bucket): tuple(map(str, members)) for bucket, members in document["buckets"].items()},
            tuple(map(str, document["rekeyed"])),
        )


class SessionTable(MutableMapping[str, SessionEntry]):
    """The keystore's sessions by id, each decoded on first access.

    A purge or a recorder transaction touches a few of possibly 100,000 sessions: the
    others stay the JSON objects they were read as and are written back unchanged, and
    their buckets can be read without decoding them (`buckets_of`, `bucket_pairs`)."""

    def __init__(self, entries: Mapping[str, SessionEntry] | None = None) -> None:
        self._items: dict[str, SessionEntry | dict[str, Any]] = dict(entries or {})
        """A SessionEntry, or the JSON object it will be decoded from (one dict keeps the order)."""
        self._instants: dict[str, datetime] = {}

    @classmethod
    def from_documents(cls, documents: list[Any], instants: dict[str, datetime]) -> SessionTable:
        table = cls()
        table._instants = instants
        expected = _field_names(SessionEntry)
        for document in documents:
            if type(document) is dict and document.keys() == expected and type(document["id"]) is str:
                table._items[document["id"]] = document
            else:  # an odd shape: decode it now (defaults applied), or fail
                entry = _record(SessionEntry, document, instants)
                table._items[entry.id] = entry
        return table

    def __getitem__(self, session_id: str) -> SessionEntry:
        item = self._items[session_id]
        if type(item) is dict:
            try:
                item = self._items[session_id] = _record(SessionEntry, dict(item), self._instants)
            except (TypeError, ValueError, AttributeError) as exc:
                raise KeystoreError(f"the keystore opens but session {session_id} is malformed ({exc})") from None
        return item  # type: ignore[return-value]

    def __setitem__(self, session_id: str, entry: SessionEntry) -> None:
        self._items[session_id] = entry

    def __delitem__(self, session_id: str) -> None:
        del self._items[session_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._items

    def __repr__(self) -> str:
        return f"SessionTable({len(self)} sessions)"

    def buckets_of(self, session_id: str) -> tuple[str | None, str | None]:
        """(audio bucket, transcript bucket) of a session, without decoding it."""
        item = self._items[session_id]
        if type(item) is dict:
            return item["audio_bucket"], item["transcript_bucket"]
        return item.audio_bucket, item.transcript_bucket  # type: ignore[union-attr]

    def bucket_pairs(self) -> list[tuple[str, str | None, str | None]]:
        """(id, audio bucket, transcript bucket) of every session, without decoding any."""
        return [
            (session_id, item["audio_bucket"], item["transcript_bucket"])
            if type(item) is dict
            else (session_id, item.audio_bucket, item.transcript_bucket)  # type: ignore[union-attr]
            for session_id, item in self._items.items()
        ]

    def documents(self, instants: dict[datetime, str]) -> list[dict[str, Any]]:
        """JSON-ready objects: the undecoded ones as they were read."""
        return [item if type(item) is dict else _encode(item, instants) for item in self._items.values()]  # type: ignore[arg-type]


@dataclass
class KeystoreData:
    sessions: SessionTable = field(default_factory=SessionTable)
    buckets: dict[str, Bucket] = field(default_factory=dict)
    last_seen: dict[str, datetime] = field(default_factory=dict)
    """Per profile: when its latest session began (for inactive profiles)."""
    forgets: dict[str, PendingForget] = field(default_factory=dict)
    """Forget requests not yet fulfilled (only between a crash and the next command)."""

    def __post_init__(self) -> None:
        if not isinstance(self.sessions, SessionTable):
            self.sessions = SessionTable(self.sessions)

    def to_json(self) -> bytes:
        instants: dict[datetime, str] = {}  # a bucket's expiry is shared by all its sessions
        document = {
            "format": "edge-keystore",
            "version": FORMAT_VERSION,
            "buckets": [_encode(b, instants) for b in self.buckets.values()],
            "sessions": self.sessions.documents(instants),
            "last_seen": {name: instant.isoformat() for name, instant in sorted(self.last_seen.items())},
        }
        if self.forgets:
            document["forgets"] = [pending.to_json() for pending in self.forgets.values()]
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> KeystoreData:
        document = json.loads(raw)
        if document.get("format") != "edge-keystore" or document.get("version") != FORMAT_VERSION:
            raise KeystoreError(f"the keystore is version {document.get('version')!r}; this edge reads version {FORMAT_VERSION}")
        instants: dict[str, datetime] = {}
        try:
            buckets = [_record(Bucket, b, instants) for b in document["buckets"]]
            sessions = SessionTable.from_documents(document["sessions"], instants)
            last_seen = {name: datetime.fromisoformat(t) for name, t in document.get("last_seen", {}).items()}
            forgets = [PendingForget.from_json(f) for f in document.get("forgets", [])]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # sealed by us, so only a bug gets here
            raise KeystoreError(f"the keystore opens but its contents are malformed ({type(exc).__name__}: {exc})") from None
        return cls(sessions, {b.id: b for b in buckets}, last_seen, {f.request: f for f in forgets})

    def members_by_bucket(self) -> dict[str, list[str]]:
        """For each bucket with data, the ids of the sessions whose data is in it (one pass)."""
        index: dict[str, list[str]] = {}
        for session_id, audio, transcript in self.sessions.bucket_pairs():
            if audio is not None:
                index.setdefault(audio, []).append(session_id)
            if transcript is not None:
                index.setdefault(transcript, []).append(session_id)
        return index


def _encode(record: Bucket | SessionEntry, instants: dict[datetime, str]) -> dict[str, Any]:
    """A record as JSON-ready fields in declaration order (instants as ISO 8601 UTC, memoised
    in `instants`). The order is fixed so the same data always seals to the same plaintext and
    an unchanged keystore is never rewritten (a set's order changes with each process's hash seed)."""
    encoded = {}
    for name in _field_order(type(record)):
        value = getattr(record, name)
        if isinstance(value, datetime):
            text = instants.get(value)
            value = text if text is not None else instants.setdefault(value, iso_utc(value))  # type: ignore[arg-type]
        encoded[name] = value
    return encoded


_FIELD_NAMES: dict[type, frozenset[str]] = {}
_FIELD_ORDER: dict[type, tuple[str, ...]] = {}
Record = TypeVar("Record", Bucket, SessionEntry)
_TIME_FIELDS = ("created", "expires", "audio_expires", "transcript_expires")  # parsed back to datetime


def _field_order(kind: type) -> tuple[str, ...]:
    order = _FIELD_ORDER.get(kind)
    return order if order is not None else _FIELD_ORDER.setdefault(kind, tuple(f.name for f in fields(kind)))


def _field_names(kind: type) -> frozenset[str]:
    names = _FIELD_NAMES.get(kind)
    return names if names is not None else _FIELD_NAMES.setdefault(kind, frozenset(f.name for f in fields(kind)))


def _record(kind: type[Record], document: dict[str, Any], instants: dict[str, datetime]) -> Record:
    """A record from a fresh JSON object, instants back to datetime (memoised in `instants`).

    A purge may open 100,000 records, and a frozen dataclass's __init__ costs more than the
    JSON parse itself. An object whose keys are exactly the dataclass's fields is therefore
    filled in directly; any other shape goes through __init__, which applies defaults and
    names what is wrong."""
    for name in _TIME_FIELDS:
        value = document.get(name)
        if value is not None:
            instant = instants.get(value)
            document[name] = instant if instant is not None else instants.setdefault(value, datetime.fromisoformat(value))
    if document.keys() != _field_names(kind):
        return kind(**document)
    record = object.__new__(kind)
    record.__dict__.update(document)
    return record
