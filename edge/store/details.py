"""An audit entry's personal details, sealed so that they are forgotten with the data.

A session's exact start, its length, its listener and what it produced are personal data
about whoever spoke. The log keeps them only as `sealed`: ChaCha20-Poly1305 under a random
key of the session's own (`details` in its keystore row, which the session's longest-lived
bucket seals and a re-key of that bucket seals again). When the session's last data is
shredded or forgotten, its row goes, and with it the only copy of the key: no key the device
holds opens those details any more, while the line, which commits to the ciphertext, keeps
verifying (docs/FORMATS.md section 6, "Sealed details").
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from edge.events import DETAILS as DETAILS  # the marker, re-exported for the writers
from edge.store.rows import NONCE, derive

FORGOTTEN = "details forgotten with the data"
UNREAD = "details sealed (the keystore cannot be read here)"

KEY_BYTES = 32


def new_key() -> str:
    """A session's details key, as its keystore row holds it (hex)."""
    return os.urandom(KEY_BYTES).hex()


def _aead(key: str) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(derive(bytes.fromhex(key), b"edge/v2 audit details"))


def _context(session: str, event_type: str) -> bytes:
    """Binds the ciphertext to its session and line type: details moved to another line open nothing."""
    return f"edge audit details {session} {event_type}".encode()


def seal(fields: Mapping[str, Any], key: str, session: str, event_type: str) -> str:
    """Base64 of nonce12 || ChaCha20-Poly1305 of the canonical JSON of `fields`."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    nonce = os.urandom(NONCE)
    return base64.b64encode(nonce + _aead(key).encrypt(nonce, text, _context(session, event_type))).decode()


def open_sealed(sealed: str, key: str | None, session: str, event_type: str) -> dict[str, Any] | None:
    """The sealed fields, or None when there is no key (forgotten with the data) or they do
    not open with it (an edited line opens nothing: fail closed)."""
    if key is None:
        return None
    try:
        raw = base64.b64decode(sealed, validate=True)
        if len(raw) < NONCE + 16:
            return None
        document = json.loads(_aead(key).decrypt(raw[:NONCE], raw[NONCE:], _context(session, event_type)))
    except (InvalidTag, binascii.Error, ValueError):
        return None
    return document if isinstance(document, dict) else None


def readable(event_type: str, fields: dict[str, Any], keys: Mapping[str, str] | None) -> dict[str, Any]:
    """An entry's fields as a person reads them: `sealed` replaced by what it holds, or by
    `details` = FORGOTTEN when no key the device holds (`keys`: session -> details key)
    opens it any more; UNREAD when the keys are not known here (`keys` None)."""
    sealed, session = fields.get("sealed"), fields.get("session")
    if not isinstance(sealed, str) or not isinstance(session, str):
        return fields
    shown = {k: v for k, v in fields.items() if k not in ("sealed", "details")}
    if keys is None:
        return {**shown, "details": UNREAD}
    details = open_sealed(sealed, keys.get(session), session, event_type)
    return {**shown, **details} if details is not None else {**shown, "details": FORGOTTEN}
