"""The keystore: the one source of truth for what exists and when it dies.

The document (edge.store.records) is sealed as a whole under the root key and
replaced atomically; transactions open it under the data-folder lock. Everything
else (schedules, status, reports) is derived from it.

Ratchet: destroying a bucket replaces the root, so a stale copy of the keystore
left on flash cannot be opened once the old root is gone from the vault.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.crypto.age import Identity
from edge.crypto.vault import ROOT_BYTES, Vault
from edge.disk.files import destroy_temps, private_dir, read_in, write_atomic_in
from edge.disk.layout import KEYSTORE
from edge.disk.lock import DataLock
from edge.errors import KeystoreError, VaultError
from edge.faults import crash_point
from edge.store.records import Bucket, KeystoreData
from edge.values import DataKind

MAGIC = b"edge-keystore/v1\n"


class Access(enum.Enum):
    """What a process may do to the data folder; only the agent's own start may decide that a
    missing root key is gone for good (and start afresh)."""

    READ = "read"
    """status, verify, report, doctor: never write anything, not even a lock file."""
    WRITE = "write"
    """purge, forget, export: change the keystore, but a missing root is an error."""
    AGENT = "agent"
    """The agent starting: a root that is gone (power cut) is recorded and a fresh keystore begun."""


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

    def new_bucket(self, data: KeystoreData, bucket_id: str, profile: str, kind: DataKind, expires: datetime) -> Bucket:
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

        def reseal(bucket_id: str, sealed: str) -> str:
            return _seal_identity(new, bucket_id, _open_identity(old, bucket_id, sealed, None))

        resealed = {
            bucket_id: replace(
                bucket,
                sealed_identity=reseal(bucket_id, bucket.sealed_identity),
                retiring_identity=reseal(bucket_id, bucket.retiring_identity) if bucket.retiring_identity else None,
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
