"""The age v1 file format (age-encryption.org/v1), X25519 recipients only.

Written on pyca/cryptography primitives so that Debian's `age` can open what we
seal and we can open what it seals. Streaming both ways: a recording is sealed
64 KiB at a time as it is heard, and opened one verified chunk at a time.

Every way a sealed file can be wrong (bad header, wrong key, flipped bit,
truncation, reordered or missing chunks) raises the same opaque `AgeError`, and
no plaintext of an unverified chunk is ever returned. See docs/FORMATS.md.
"""

from __future__ import annotations

import base64
import hmac
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.crypto import bech32
from edge.errors import AgeError

VERSION_LINE = b"age-encryption.org/v1"
CHUNK = 64 * 1024
"""Plaintext bytes per payload chunk."""
TAG = 16
_X25519_INFO = b"age-encryption.org/v1/X25519"
_MAX_HEADER = 16 * 1024
"""Longest header we read; ours is ~200 bytes. Bounds memory on hostile input."""
_ZERO_NONCE = bytes(12)


@dataclass(frozen=True)
class Recipient:
    """An X25519 public key: enough to seal, never enough to open."""

    public: bytes

    def encode(self) -> str:
        return bech32.encode("age", self.public)

    @classmethod
    def parse(cls, text: str) -> Recipient:
        try:
            hrp, data = bech32.decode(text.strip())
        except ValueError:
            raise AgeError("not an age recipient") from None
        if hrp != "age" or len(data) != 32:
            raise AgeError("not an age recipient")
        return cls(data)


@dataclass(frozen=True, repr=False)
class Identity:
    """An X25519 private key (an age identity). repr() never shows it."""

    secret: bytes

    def __repr__(self) -> str:
        return "Identity(<secret>)"

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @property
    def recipient(self) -> Recipient:
        public = X25519PrivateKey.from_private_bytes(self.secret).public_key().public_bytes_raw()
        return Recipient(public)

    def encode(self) -> str:
        return bech32.encode("AGE-SECRET-KEY-", self.secret).upper()

    @classmethod
    def parse(cls, text: str) -> Identity:
        """One AGE-SECRET-KEY-1... line, or an identity file (comments start with #)."""
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        try:
            hrp, data = bech32.decode(lines[0]) if len(lines) == 1 else ("", b"")
        except ValueError:
            hrp, data = "", b""
        if hrp != "age-secret-key-" or len(data) != 32 or not lines[0].isupper():
            raise AgeError("not an age identity (expected one AGE-SECRET-KEY-1... line)")
        return cls(data)


# -- sealing ------------------------------------------------------------------------


class StreamWriter:
    """Seals bytes to one recipient into `out`, a chunk at a time.

    Plaintext waits in RAM until a chunk is full (at most 64 KiB + 1 byte: the
    last chunk must be known to be last), then only ciphertext reaches `out`.
    """

    def __init__(self, out: BinaryIO, recipient: Recipient) -> None:
        file_key = os.urandom(16)
        out.write(_header(file_key, recipient))
        nonce = os.urandom(16)
        out.write(nonce)
        self._out = out
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._buffer = bytearray()
        self._counter = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ValueError("write after close")
        self._buffer += data
        while len(self._buffer) > CHUNK:
            self._emit(bytes(self._buffer[:CHUNK]), last=False)
            self._wipe(CHUNK)

    def close(self) -> None:
        """Seal the final chunk. Until this runs the file is incomplete and will not open."""
        if not self.closed:
            self._emit(bytes(self._buffer), last=True)
            self._wipe(len(self._buffer))
            self.closed = True

    def _emit(self, chunk: bytes, last: bool) -> None:
        self._out.write(self._aead.encrypt(_chunk_nonce(self._counter, last), chunk, None))
        self._counter += 1

    def _wipe(self, count: int) -> None:
        self._buffer[:count] = bytes(count)
        del self._buffer[:count]


def encrypt(plaintext: bytes, recipient: Recipient) -> bytes:
    out = io.BytesIO()
    writer = StreamWriter(out, recipient)
    writer.write(plaintext)
    writer.close()
    return out.getvalue()


def _header(file_key: bytes, recipient: Recipient) -> bytes:
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient.public))
    wrap_key = _hkdf(shared, share + recipient.public, _X25519_INFO)
    body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
    lines = [VERSION_LINE, b"-> X25519 " + _b64(share), *_wrap64(_b64(body)), b"---"]
    header = b"\n".join(lines)
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, sha256).digest()
    return header + b" " + _b64(mac) + b"\n"


# -- opening ------------------------------------------------------------------------


@dataclass(frozen=True)
class Stanza:
    args: tuple[bytes, ...]
    body: bytes


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    signed: bytes
    """The header bytes the MAC covers (through "---")."""


def read_header(source: BinaryIO) -> Header:
    """Parse and syntax-check a v1 header; the file position ends at the payload."""
    lines = _HeaderLines(source)
    if lines.next() != VERSION_LINE:
        raise AgeError()
    stanzas = []
    line = lines.next()
    while line.startswith(b"-> "):
        args = tuple(line[3:].split(b" "))
        if not args or any(not a or not all(33 <= c <= 126 for c in a) for a in args):
            raise AgeError()
        body = b""
        while True:
            body_line = lines.next()
            if len(body_line) > 64:
                raise AgeError()
            body += body_line
            if len(body_line) < 64:
                break
        stanzas.append(Stanza(args, _unb64(body)))
        line = lines.next()
    if not stanzas or not line.startswith(b"--- ") or len(line) != 47:
        raise AgeError()
    if len(stanzas) > 1 and any(stanza.args[0] == b"scrypt" for stanza in stanzas):
        raise AgeError()  # the spec: an scrypt stanza must be the header's only stanza
    mac = _unb64(line[4:])
    return Header(tuple(stanzas), mac, lines.consumed[: -len(line) - 1] + b"---")


def unwrap_file_key(header: Header, identities: Iterable[Identity]) -> bytes:
    """The file key from the first X25519 stanza one of `identities` opens, MAC checked."""
    for identity in identities:
        private = X25519PrivateKey.from_private_bytes(identity.secret)
        public = identity.recipient.public
        for stanza in header.stanzas:
            if stanza.args[0] != b"X25519":
                continue  # other recipient types are ignored, as the spec requires
            if len(stanza.args) != 2 or len(stanza.body) != 32:
                raise AgeError()
            share = _unb64(stanza.args[1])
            if len(share) != 32:
                raise AgeError()
            try:  # cryptography refuses a low-order share (all-zero secret) with ValueError
                shared = private.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:
                raise AgeError() from None
            if shared == bytes(32):
                raise AgeError()
            try:
                file_key = ChaCha20Poly1305(_hkdf(shared, share + public, _X25519_INFO)).decrypt(_ZERO_NONCE, stanza.body, None)
            except InvalidTag:
                continue
            expected = hmac.new(_hkdf(file_key, b"", b"header"), header.signed, sha256).digest()
            if not hmac.compare_digest(expected, header.mac):
                raise AgeError()
            return file_key
    raise AgeError()


def decrypt_stream(source: BinaryIO, identities: Iterable[Identity]) -> Iterator[bytes]:
    """Yield verified plaintext chunks. Raises AgeError at the first bad chunk, and at
    the end if no valid final chunk was seen: a consumer must treat output as
    provisional until the iterator finishes."""
    header = read_header(source)
    file_key = unwrap_file_key(header, identities)
    nonce = source.read(16)
    if len(nonce) != 16:
        raise AgeError()
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    counter = 0
    chunk = source.read(CHUNK + TAG)
    while True:
        following = source.read(CHUNK + TAG) if len(chunk) == CHUNK + TAG else b""
        last = not following
        if len(chunk) < TAG or (last and len(chunk) == TAG and counter > 0):
            raise AgeError()  # missing final chunk, or an empty final chunk after data
        try:
            plaintext = aead.decrypt(_chunk_nonce(counter, last), chunk, None)
        except InvalidTag:
            raise AgeError() from None
        yield plaintext
        if last:
            return
        counter += 1
        chunk = following


def decrypt(data: bytes, identities: Iterable[Identity]) -> bytes:
    return b"".join(decrypt_stream(io.BytesIO(data), list(identities)))


def rekey_in_place(handle: BinaryIO, identities: Iterable[Identity], recipient: Recipient) -> None:
    """Re-address a file to `recipient` by rewriting only its header (same file key, same
    payload). An X25519 header always has the same length, so this is an in-place write
    that is safe while another process is still appending chunks to the file."""
    handle.seek(0)
    header = read_header(handle)
    length = handle.tell()
    new_header = _header(unwrap_file_key(header, identities), recipient)
    if len(new_header) != length:
        raise AgeError()
    handle.seek(0)
    handle.write(new_header)
    handle.flush()
    os.fsync(handle.fileno())


# -- helpers ------------------------------------------------------------------------


class _HeaderLines:
    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.consumed = b""

    def next(self) -> bytes:
        line = self._source.readline(_MAX_HEADER - len(self.consumed) + 1)
        self.consumed += line
        if not line.endswith(b"\n") or len(self.consumed) > _MAX_HEADER:
            raise AgeError()
        return line[:-1]


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    """Strict unpadded base64: non-canonical encodings are rejected, as the spec requires."""
    if b"=" in text or b"\n" in text or b"\r" in text:
        raise AgeError()
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise AgeError() from None
    if _b64(data) != text:
        raise AgeError()
    return data


def _wrap64(text: bytes) -> list[bytes]:
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    if not lines or len(lines[-1]) == 64:
        lines.append(b"")  # a stanza body always ends with a short line
    return lines
