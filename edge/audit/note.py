"""C2SP signed notes (c2sp.org/signed-note) holding C2SP tlog checkpoints
(c2sp.org/tlog-checkpoint), and Ed25519 cosignatures on them (c2sp.org/tlog-cosignature).

Pure: bytes in, bytes out, no I/O. These are the formats golang.org/x/mod/sumdb/note and
every C2SP witness read, so the log's tree heads can be checked, and cosigned, by tools
that know nothing of edge (docs/FORMATS.md section 6).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.audit.merkle import EMPTY_ROOT, HASH_SIZE

ED25519 = 0x01
"""signed-note signature type of a log's own Ed25519 signature."""
COSIGNATURE = 0x04
"""signed-note signature type of a timestamped Ed25519 cosignature (tlog-cosignature)."""
DASH = "\u2014"
MAX_SIGNATURES = 64
"""More signature lines than this (the spec asks a verifier to take at least 16) is refused."""


class NoteError(ValueError):
    """Not a note, checkpoint, key or cosignature of the C2SP formats; the message says why."""


@dataclass(frozen=True)
class Signature:
    """One signature line: `— name base64(key id || signature)`."""

    name: str
    key_id: bytes
    signature: bytes

    @property
    def line(self) -> str:
        return f"{DASH} {self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class TreeHead:
    """A tlog-checkpoint body: origin, tree size, root hash (extension lines kept as they are)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    @property
    def text(self) -> bytes:
        lines = (self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions)
        return "".join(line + "\n" for line in lines).encode()


@dataclass(frozen=True)
class SignedNote:
    text: bytes
    signatures: tuple[Signature, ...]

    def encode(self) -> bytes:
        return self.text + b"\n" + "".join(s.line for s in self.signatures).encode()


def key_id(name: str, kind: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4] (signed-note; tlog-cosignature)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes, kind: int = ED25519) -> str:
    """`name+hex(key id)+base64(type || public key)`: what note.NewVerifier takes."""
    check_name(name)
    return f"{name}+{key_id(name, kind, public_key).hex()}+{base64.b64encode(bytes([kind]) + public_key).decode()}"


def parse_verifier_key(vkey: str, kind: int) -> tuple[str, bytes]:
    """(name, 32-byte public key) of an Ed25519 vkey of signature type `kind`."""
    name, _, rest = vkey.strip().partition("+")
    hex_id, _, encoded = rest.partition("+")
    try:
        check_name(name)
        material = base64.b64decode(encoded, validate=True)
        if len(material) != 33 or material[0] != kind:
            raise NoteError(f"it is not an Ed25519 key of signature type 0x{kind:02x}")
        if bytes.fromhex(hex_id) != key_id(name, kind, material[1:]):
            raise NoteError("its key id does not match its name and key")
    except (binascii.Error, ValueError) as exc:
        why = str(exc) if isinstance(exc, NoteError) else "expected NAME+KEYID+BASE64"
        raise NoteError(f"not a verifier key ({why})") from None
    return name, material[1:]


def check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name) or not name.isprintable():
        raise NoteError(f"{name!r} is not a key name (non-empty, no spaces, no '+')")


def sign(text: bytes, name: str, private_key: Ed25519PrivateKey) -> SignedNote:
    """The note `text` signed by `name`'s Ed25519 key (signature type 0x01)."""
    public = private_key.public_key().public_bytes_raw()
    return SignedNote(text, (Signature(name, key_id(name, ED25519, public), private_key.sign(text)),))


def parse(data: bytes) -> SignedNote:
    """A signed note split into its text and signature lines (none verified yet)."""
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("not UTF-8") from None
    if any(c < " " and c != "\n" for c in decoded):
        raise NoteError("it holds control characters")
    text, separator, signatures = decoded.rpartition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise NoteError("no blank line before signature lines ending in a newline")
    lines = signatures[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    return SignedNote((text + "\n").encode(), tuple(parse_signature(line) for line in lines))


def parse_signature(line: str) -> Signature:
    """`— name base64(key id || signature)`."""
    parts = line.split(" ")
    try:
        if len(parts) != 3 or parts[0] != DASH:
            raise ValueError
        check_name(parts[1])
        raw = base64.b64decode(parts[2], validate=True)
        if len(raw) < 5:
            raise ValueError
    except (ValueError, binascii.Error):
        raise NoteError(f"{line[:80]!r} is not a signature line (— NAME BASE64)") from None
    return Signature(parts[1], raw[:4], raw[4:])


def verified_by(note: SignedNote, name: str, public_key: bytes) -> bool:
    """Whether a signature line of `name`'s Ed25519 key (type 0x01) signs the text. A line of
    that name and key id that fails to verify fails the whole note (signed-note)."""
    wanted = key_id(name, ED25519, public_key)
    found = [s for s in note.signatures if s.name == name and s.key_id == wanted]
    return bool(found) and all(_ed25519_ok(public_key, s.signature, note.text) for s in found)


def cosignature_message(text: bytes, timestamp: int) -> bytes:
    """What an Ed25519 cosigner signs (tlog-cosignature): its header, the time, the note text."""
    return b"cosignature/v1\ntime %d\n" % timestamp + text


def cosigned_at(note: SignedNote, name: str, public_key: bytes) -> int | None:
    """The time (POSIX seconds) of the newest cosignature on the note by `name`'s Ed25519
    cosigner key (type 0x04) if one verifies, else None. A line of that name and key id that
    does not verify makes it None (a damaged cosignature is never partly trusted)."""
    wanted = key_id(name, COSIGNATURE, public_key)
    times = []
    for s in note.signatures:
        if s.name != name or s.key_id != wanted:
            continue
        if len(s.signature) != 8 + 64:
            return None
        (timestamp,) = struct.unpack(">Q", s.signature[:8])
        if timestamp >= 1 << 63 or not _ed25519_ok(public_key, s.signature[8:], cosignature_message(note.text, timestamp)):
            return None
        times.append(timestamp)
    return max(times) if times else None


def cosigned_instant(timestamp: int) -> datetime | None:
    """A cosignature's time as an instant; None when no calendar holds it (a valid signature
    can carry any 63-bit time, and datetime refuses years past 9999)."""
    try:
        return datetime.fromtimestamp(timestamp, timezone.utc)
    except (OverflowError, ValueError, OSError):
        return None


def cosign(text: bytes, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> Signature:
    """A cosignature line on the note `text` (what a witness returns)."""
    public = private_key.public_key().public_bytes_raw()
    signature = struct.pack(">Q", timestamp) + private_key.sign(cosignature_message(text, timestamp))
    return Signature(name, key_id(name, COSIGNATURE, public), signature)


def parse_tree_head(text: bytes) -> TreeHead:
    """A tlog-checkpoint body: origin, size (decimal, no leading zeros), base64 root."""
    lines = text.decode("utf-8", errors="replace").split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
        raise NoteError("not a tlog checkpoint (origin, size and root hash lines, none empty)")
    origin, size_text, root_text = lines[:3]
    if not size_text.isascii() or not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise NoteError(f"tree size {size_text[:30]!r} is not a decimal number without leading zeros")
    if len(size_text) > 20 or int(size_text) >= 1 << 64:  # int() alone refuses 4300 digits with a traceback
        raise NoteError(f"tree size {size_text[:30]!r} is more than a 64-bit number (tlog-checkpoint)")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        root = b""
    if len(root) != HASH_SIZE:
        raise NoteError(f"root hash {root_text[:60]!r} is not the base64 of 32 bytes")
    size = int(size_text)
    if size == 0 and root != EMPTY_ROOT:
        raise NoteError("a tree of size 0 whose root is not the empty tree's")
    return TreeHead(origin, size, root, tuple(lines[3:-1]))


def _ed25519_ok(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False
