"""Reading keystore v1 (one sealed JSON document, edge 0.x up to the storage rewrite) so the
first writable open can migrate it to v2. Nothing writes v1 any more.

v1: MAGIC || nonce(12) || ChaCha20-Poly1305(HKDF-SHA256(root, "edge/v1 keystore"), JSON, aad=MAGIC);
each bucket's identity inside is sealed again under HKDF(root, "edge/v1 bucket identity"),
aad = the bucket id (hex nonce || ciphertext).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from edge.crypto.age import Identity
from edge.disk.layout import KEYSTORE
from edge.disk.versioned import KEYSTORE_V1
from edge.errors import KeystoreError
from edge.store.records import Bucket, PendingForget, SessionEntry
from edge.store.rows import derive, unseal
from edge.values import DataKind, TagRule

MAGIC = b"edge-keystore/v1\n"


@dataclass
class LegacyKeystore:
    buckets: list[Bucket] = field(default_factory=list)
    sessions: list[SessionEntry] = field(default_factory=list)
    last_seen: dict[str, datetime] = field(default_factory=dict)
    forgets: dict[str, PendingForget] = field(default_factory=dict)


def open_v1(root: bytes, sealed: bytes) -> LegacyKeystore:
    """The v1 keystore's records; InvalidTag when `root` is not the root that sealed it."""
    if not sealed.startswith(MAGIC):
        raise InvalidTag()
    plaintext = unseal(ChaCha20Poly1305(derive(root, b"edge/v1 keystore")), sealed[len(MAGIC) :], MAGIC)
    try:
        return _records(root, json.loads(plaintext))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # sealed by edge, so only a bug gets here
        raise KeystoreError(f"the v1 keystore opens but its contents are malformed ({type(exc).__name__}: {exc})") from None


def _records(root: bytes, document: dict[str, Any]) -> LegacyKeystore:
    KEYSTORE_V1.check(document, KEYSTORE)
    identities = ChaCha20Poly1305(derive(root, b"edge/v1 bucket identity"))
    buckets = [_bucket(identities, b) for b in document["buckets"]]
    sessions = [_session(s) for s in document["sessions"]]
    last_seen = {str(name): datetime.fromisoformat(t) for name, t in document.get("last_seen", {}).items()}
    forgets = [PendingForget.from_json(f) for f in document.get("forgets", [])]
    return LegacyKeystore(buckets, sessions, last_seen, {f.request: f for f in forgets})


def _bucket(identities: ChaCha20Poly1305, document: dict[str, Any]) -> Bucket:
    bucket_id = document["id"]

    def secret_of(sealed: str) -> bytes:
        raw = bytes.fromhex(sealed)
        try:
            return unseal(identities, raw, bucket_id.encode())
        except InvalidTag:
            raise KeystoreError(f"bucket {bucket_id}: its key cannot be unsealed (v1 keystore damaged)") from None

    secret = secret_of(document["sealed_identity"])
    if Identity(secret).recipient.encode() != document["recipient"]:
        raise KeystoreError(f"bucket {bucket_id}: its key does not match its public key (v1 keystore damaged)")
    retiring = document.get("retiring_identity")
    return Bucket(
        id=bucket_id,
        profile=document["profile"],
        kind=DataKind(document["kind"]),
        expires=datetime.fromisoformat(document["expires"]),
        recipient=document["recipient"],
        secret=secret,
        retiring_identity=secret_of(retiring) if retiring else None,
    )


def _session(document: dict[str, Any]) -> SessionEntry:
    document = dict(document)
    for name in ("created", "audio_expires", "transcript_expires"):
        if document.get(name) is not None:
            document[name] = datetime.fromisoformat(document[name])
    document["rule"] = TagRule(document["rule"])
    return SessionEntry(**document)
