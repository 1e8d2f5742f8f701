"""An audit entry's personal details, sealed so that they are forgotten with the data.

A session's exact start, its length and what it sealed are personal data about whoever
spoke. The log keeps them only as an age ciphertext (`sealed`) to the recipient of the
session's longest-lived bucket: when that bucket's key is destroyed (shred, forget, re-key),
no key the device holds opens them any more, while the line, which commits to the
ciphertext, keeps verifying (docs/FORMATS.md section 6, "Sealed details").
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

from edge.crypto.age import Identity, Recipient, decrypt, encrypt
from edge.errors import AgeError

DETAILS = 1
"""The `details` marker of an entry whose personal fields are in `sealed`."""


def seal(fields: dict[str, Any], recipient: str) -> str:
    """The base64 age ciphertext of the canonical JSON of `fields`."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return base64.b64encode(encrypt(text, Recipient.parse(recipient))).decode()


def open_sealed(sealed: str, identities: Iterable[Identity]) -> dict[str, Any] | None:
    """The sealed fields, or None when no identity opens them (forgotten with the data) or
    they are not what `seal` writes (an edited line opens nothing: fail closed)."""
    try:
        document = json.loads(decrypt(base64.b64decode(sealed, validate=True), identities))
    except (AgeError, binascii.Error, ValueError):
        return None
    return document if isinstance(document, dict) else None


FORGOTTEN = "details forgotten with the data"


def readable(fields: dict[str, Any], identities: Iterable[Identity]) -> dict[str, Any]:
    """An entry's fields as a person reads them: `sealed` replaced by what it holds, or by
    `details` = FORGOTTEN when no key the device holds opens it any more."""
    sealed = fields.get("sealed")
    if not isinstance(sealed, str):
        return fields
    shown = {k: v for k, v in fields.items() if k not in ("sealed", "details")}
    details = open_sealed(sealed, identities)
    return {**shown, **details} if details is not None else {**shown, "details": FORGOTTEN}
