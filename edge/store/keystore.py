"""The keystore: the one source of truth for what exists and when it dies.

It lists every session (profile, tagging rule, creation, absolute expiry
instants, buckets) and every bucket (its public key, and its private identity
sealed under the root key). The whole document is sealed under the root and
replaced atomically. Everything else (schedules, status, reports) is derived
from it.

Ratchet: destroying a bucket replaces the root, so a stale copy of the keystore
left on flash cannot be opened once the old root is gone from the vault.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.crypto.age import Identity
from edge.crypto.vault import ROOT_BYTES, Vault, VaultError
from edge.errors import EdgeError
from edge.faults import crash_point
from edge.store.files import destroy_temps, private_dir, read_in, write_atomic_in
from edge.store.layout import KEYSTORE
from edge.store.lock import DataLock

MAGIC = b"edge-keystore/v1\n"
FORMAT_VERSION = 1


class Access(enum.Enum):
    """What a process may do to the data folder; only the agent's own start may decide that a
    missing root key is gone for good (and start afresh)."""

    READ = "read"
    """status, verify, report, doctor: never write anything, not even a lock file."""
    WRITE = "write"
    """purge, forget, export: change the keystore, but a missing root is an error."""
    AGENT = "agent"
    """The agent starting: a root that is gone (power cut) is recorded and a fresh keystore begun."""


class KeystoreError(EdgeError):
    """The keystore cannot be opened with the vault's root key; nothing was changed."""


@dataclass(frozen=True)
class Bucket:
    id: str
    profile: str
    kind: str
    """"audio" or "transcript"."""
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
    rule: str
    """How the profile was chosen: "given", "active" or "strictest"."""
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

    def to_json(self) -> dict:
        return {
            "request": self.request,
            "selector": self.selector,
            "sessions": list(self.sessions),
            "buckets": {bucket: list(members) for bucket, members in sorted(self.buckets.items())},
            "rekeyed": list(self.rekeyed),
        }

    @classmethod
    def from_json(cls, document: dict) -> PendingForget:
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
        self._items: dict[str, SessionEntry | dict] = dict(entries or {})
        """A SessionEntry, or the JSON object it will be decoded from (one dict keeps the order)."""
        self._instants: dict[str, datetime] = {}

    @classmethod
    def from_documents(cls, documents: list, instants: dict[str, datetime]) -> SessionTable:
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

    def documents(self, instants: dict[datetime, str]) -> list[dict]:
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
            raise KeystoreError(
                f"the keystore is version {document.get('version')!r}; this edge reads version {FORMAT_VERSION}"
            )
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


class Keystore:
    """The sealed keystore in DATA_DIR/keystore, opened under the data-folder lock."""

    def __init__(
        self,
        data_dir: Path,
        vault: Vault,
        on_root_lost: Callable[[str], None] | None = None,
        access: Access = Access.WRITE,
    ) -> None:
        self.data_dir = data_dir if access is Access.READ else private_dir(data_dir)
        self.path = data_dir / KEYSTORE
        self.vault = vault
        self.on_root_lost = on_root_lost
        """Called (under the lock, with the reason) when the agent finds its root gone, so the loss is audited."""
        self.access = access
        self._root: bytes | None = None
        self._sealed_json = b""
        """The plaintext of the keystore as last opened or written (saves only what changed)."""
        self.root_lost: str | None = None
        """Why the root is gone, when the vault had none although a keystore existed (e.g. a
        power-off with the keyring vault): everything retained was shredded by that loss."""

    @property
    def readonly(self) -> bool:
        return self.access is Access.READ

    @contextmanager
    def transaction(self) -> Iterator[KeystoreData]:
        """Lock, open, let the caller change the data, seal it again if it changed."""
        with DataLock(self.data_dir, create=not self.readonly):
            data = self._open()  # sets _sealed_json to what was on disk
            yield data
            plaintext = data.to_json()
            if plaintext != self._sealed_json:  # a ratchet inside may have sealed it already
                self._save(data, plaintext)

    def read(self) -> KeystoreData:
        with DataLock(self.data_dir, create=not self.readonly):
            return self._open()

    def save(self, data: KeystoreData) -> None:
        """Make the data durable now, mid-transaction (a checkpoint before touching files)."""
        self._save(data)

    # -- buckets -------------------------------------------------------------------

    def new_bucket(self, data: KeystoreData, bucket_id: str, profile: str, kind: str, expires: datetime) -> Bucket:
        """Create a bucket with a fresh identity (inside a transaction)."""
        identity = Identity.generate()
        bucket = Bucket(
            id=bucket_id,
            profile=profile,
            kind=kind,
            expires=expires,
            recipient=identity.recipient.encode(),
            sealed_identity=_seal_identity(self._require_root(), bucket_id, identity),
        )
        data.buckets[bucket_id] = bucket
        return bucket

    def identity(self, bucket: Bucket) -> Identity:
        """Unseal a bucket's private identity: only export, re-keying and verification need it."""
        return _open_identity(self._require_root(), bucket.id, bucket.sealed_identity, bucket.recipient)

    def identities(self, bucket: Bucket) -> list[Identity]:
        """The current identity, and the retiring one while a re-key is under way."""
        found = [self.identity(bucket)]
        if bucket.retiring_identity is not None:
            found.append(_open_identity(self._require_root(), bucket.id, bucket.retiring_identity, None))
        return found

    def start_rekey(self, data: KeystoreData, bucket_id: str) -> Bucket:
        """Give a bucket a fresh identity, keeping the old one as retiring (inside a transaction).
        A crash before `finish_rekey` leaves every file openable by one of the two."""
        bucket = data.buckets[bucket_id]
        if bucket.retiring_identity is not None:
            return bucket  # a re-key is already under way: finish that one first
        identity = Identity.generate()
        data.buckets[bucket_id] = replace(
            bucket,
            recipient=identity.recipient.encode(),
            sealed_identity=_seal_identity(self._require_root(), bucket_id, identity),
            retiring_identity=bucket.sealed_identity,
        )
        return data.buckets[bucket_id]

    def finish_rekey(self, data: KeystoreData, bucket_ids: list[str]) -> None:
        """Drop the retiring identities and ratchet, so no copy of them survives anywhere."""
        for bucket_id in bucket_ids:
            if bucket_id in data.buckets:
                data.buckets[bucket_id] = replace(data.buckets[bucket_id], retiring_identity=None)
        self._ratchet(data)

    def destroy_buckets(self, data: KeystoreData, bucket_ids: list[str]) -> None:
        """Forget these buckets' identities and ratchet the root (inside a transaction).

        After this returns, neither the current keystore nor any older copy of it can
        yield those identities: the only root that opened the old copies is gone."""
        for bucket_id in bucket_ids:
            data.buckets.pop(bucket_id, None)
        self._ratchet(data)

    # -- internals -----------------------------------------------------------------

    def _require_root(self) -> bytes:
        if self._root is None:
            raise KeystoreError("the keystore is not open")
        return self._root

    def _open(self) -> KeystoreData:
        if not self.readonly:  # stale copies of a root or keystore a crashed write left behind
            self.vault.scrub()
            destroy_temps(self.data_dir, KEYSTORE)
        current, staged = self.vault.read("current"), self.vault.read("next")
        self._sealed_json = b""
        sealed = read_in(self.data_dir, KEYSTORE)
        if sealed is None:
            if not self.readonly and current is None:
                current = os.urandom(ROOT_BYTES)
                self.vault.write("current", current)
            self._root = current
            return KeystoreData()
        for root in (current, staged):
            if root is None:
                continue
            try:
                plaintext = _unseal(root, sealed)
            except InvalidTag:
                continue
            data = KeystoreData.from_json(plaintext)
            self._sealed_json = plaintext
            if root is staged and not self.readonly:  # a ratchet was interrupted after the re-seal
                self.vault.write("current", staged)
            if staged is not None and not self.readonly:
                self.vault.erase("next")
            self._root = root
            return data
        if current is None and staged is None:
            return self._after_root_loss(self.vault.why_missing())  # VaultError if maybe only invisible
        raise KeystoreError(
            f"{self.path}: the keystore cannot be opened with the vault's root key "
            f"({self.vault.level.backend}). It is damaged (e.g. cut short by a power cut) or belongs to "
            "another vault; nothing was changed, and edge will not record until it opens. What it protected "
            f"can never be opened again: to start afresh, move it aside (mv {self.path} {self.path}.damaged)."
        )

    def _after_root_loss(self, reason: str) -> KeystoreData:
        """No root anywhere but a keystore exists: the data can never be opened again. Only the
        agent's start records that and begins afresh; anything else says so and changes nothing."""
        self.root_lost = reason
        if self.readonly:
            return KeystoreData()
        if self.access is not Access.AGENT:
            raise VaultError(
                f"{self.path}: {reason}, so nothing retained can be opened again. The agent records the "
                "loss and starts afresh when it next starts (systemctl start edge-agent); nothing was changed."
            )
        self._root = os.urandom(ROOT_BYTES)
        self.vault.write("current", self._root)
        data = KeystoreData()
        self._save(data)
        if self.on_root_lost is not None:
            self.on_root_lost(reason)
        return data

    def _save(self, data: KeystoreData, plaintext: bytes | None = None) -> None:
        if self.readonly:
            raise KeystoreError("the keystore was opened read-only")
        plaintext = plaintext if plaintext is not None else data.to_json()
        write_atomic_in(self.data_dir, KEYSTORE, _seal(self._require_root(), plaintext))
        self._sealed_json = plaintext

    def _ratchet(self, data: KeystoreData) -> None:
        old, new = self._require_root(), os.urandom(ROOT_BYTES)
        def reseal(bucket_id: str, sealed: str | None) -> str | None:
            if sealed is None:
                return None
            return _seal_identity(new, bucket_id, _open_identity(old, bucket_id, sealed, None))

        resealed = {
            bucket_id: replace(
                bucket,
                sealed_identity=reseal(bucket_id, bucket.sealed_identity),
                retiring_identity=reseal(bucket_id, bucket.retiring_identity),
            )
            for bucket_id, bucket in data.buckets.items()
        }
        data.buckets = resealed
        self.vault.write("next", new)
        crash_point("ratchet.staged")
        plaintext = data.to_json()
        write_atomic_in(self.data_dir, KEYSTORE, _seal(new, plaintext))
        self._sealed_json = plaintext
        self.vault.write("current", new)
        self.vault.erase("next")
        self._root = new


def _key(root: bytes, purpose: bytes) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=purpose).derive(root))


def _seal(root: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(12)
    return MAGIC + nonce + _key(root, b"edge/v1 keystore").encrypt(nonce, plaintext, MAGIC)


def _unseal(root: bytes, sealed: bytes) -> bytes:
    if not sealed.startswith(MAGIC) or len(sealed) < len(MAGIC) + 12 + 16:
        raise InvalidTag()
    nonce = sealed[len(MAGIC) : len(MAGIC) + 12]
    return _key(root, b"edge/v1 keystore").decrypt(nonce, sealed[len(MAGIC) + 12 :], MAGIC)


def _seal_identity(root: bytes, bucket_id: str, identity: Identity) -> str:
    nonce = os.urandom(12)
    return (nonce + _key(root, b"edge/v1 bucket identity").encrypt(nonce, identity.secret, bucket_id.encode())).hex()


def _open_identity(root: bytes, bucket_id: str, sealed: str, recipient: str | None) -> Identity:
    raw = bytes.fromhex(sealed)
    try:
        secret = _key(root, b"edge/v1 bucket identity").decrypt(raw[:12], raw[12:], bucket_id.encode())
    except InvalidTag:
        raise KeystoreError(f"bucket {bucket_id}: its key cannot be unsealed (keystore damaged)") from None
    identity = Identity(secret)
    if recipient is not None and identity.recipient.encode() != recipient:
        raise KeystoreError(f"bucket {bucket_id}: its key does not match its public key (keystore damaged)")
    return identity


def iso_utc(instant: datetime | None) -> str | None:
    """ISO 8601 in UTC, or None: how every instant is written (keystore, audit, JSON output)."""
    return instant.astimezone(timezone.utc).isoformat() if instant is not None else None


def _encode(record: Bucket | SessionEntry, instants: dict[datetime, str]) -> dict:
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


def _record(kind: type[Record], document: dict, instants: dict[str, datetime]) -> Record:
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
