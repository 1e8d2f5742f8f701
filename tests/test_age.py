"""The age v1 implementation: committed vectors, live interop with Debian's `age`,
and mutations that must all fail with one opaque error."""

import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.crypto import bech32
from edge.crypto.age import CHUNK, TAG, Identity, Recipient, StreamWriter, decrypt, decrypt_stream, encrypt, read_header
from edge.errors import AgeError

VECTORS = Path(__file__).parent / "vectors" / "age"
SPEC = json.loads((VECTORS / "vectors.json").read_text())
IDENTITY = Identity.parse((VECTORS / "identity.txt").read_text())
OPAQUE = str(AgeError())


def pattern(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def need_age():
    if shutil.which("age") is None:
        pytest.fail("Debian's age is missing: run scripts/setup.sh test")


@pytest.mark.parametrize("vector", SPEC["files"], ids=[f["file"] for f in SPEC["files"]])
def test_committed_vectors_open(vector):
    plaintext = decrypt((VECTORS / vector["file"]).read_bytes(), [IDENTITY])
    assert hashlib.sha256(plaintext).hexdigest() == vector["sha256"]


def test_identity_and_recipient_encoding():
    assert IDENTITY.recipient.encode() == SPEC["recipient"]
    # The example pair from the age specification.
    spec_identity = Identity.parse("AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX")
    assert spec_identity.secret == bytes([0x42]) * 32
    assert spec_identity.encode() == "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
    assert Recipient.parse("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj").public.hex() == (
        "132c442be010fbd57e72603328aa76e71fccc1503aae219327d14d9c9993f472"
    )
    assert "SECRET" not in repr(spec_identity) and "GFPYY" not in repr(spec_identity)


@pytest.mark.parametrize(
    "text",
    [
        "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEY",  # checksum
        "age-secret-key-1gfpyysjzgfpyysjzgfpyysjzgfpyysjzgfpyysjzgfpyysjzgfpq4egaex",  # lowercase
        "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj",  # a recipient
        "",
    ],
)
def test_bad_identities_are_refused(text):
    with pytest.raises(AgeError):
        Identity.parse(text)


def test_bech32_rejects_mixed_case():
    with pytest.raises(ValueError):
        bech32.decode("Age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj")


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_interop_with_debian_age_both_ways(tmp_path, size):
    need_age()
    plaintext = os.urandom(size)
    identity_file = tmp_path / "identity.txt"
    identity_file.write_text(IDENTITY.encode() + "\n")
    ours = tmp_path / "ours.age"
    ours.write_bytes(encrypt(plaintext, IDENTITY.recipient))
    opened = subprocess.run(["age", "-d", "-i", str(identity_file), str(ours)], capture_output=True, check=True)
    assert opened.stdout == plaintext
    (tmp_path / "plain").write_bytes(plaintext)
    theirs = tmp_path / "theirs.age"
    subprocess.run(["age", "-r", IDENTITY.recipient.encode(), "-o", str(theirs), str(tmp_path / "plain")], check=True)
    assert decrypt(theirs.read_bytes(), [IDENTITY]) == plaintext


def test_streaming_writer_holds_at_most_one_chunk():
    out = io.BytesIO()
    writer = StreamWriter(out, IDENTITY.recipient)
    header_and_nonce = len(out.getvalue())
    writer.write(b"x" * CHUNK)
    assert len(out.getvalue()) == header_and_nonce  # might be the last chunk: held
    writer.write(b"x")
    assert len(out.getvalue()) == header_and_nonce + CHUNK + TAG  # a full chunk went out sealed
    writer.close()
    assert decrypt(out.getvalue(), [IDENTITY]) == b"x" * (CHUNK + 1)


def _sealed(size: int = 2 * CHUNK + 100) -> tuple[bytes, bytes, int]:
    plaintext = pattern(size)
    sealed = encrypt(plaintext, IDENTITY.recipient)
    source = io.BytesIO(sealed)
    read_header(source)
    return plaintext, sealed, source.tell()  # where the payload nonce starts


def _mutations():
    plaintext, sealed, start = _sealed()
    body = start + 16
    chunks = [sealed[body : body + CHUNK + TAG], sealed[body + CHUNK + TAG : body + 2 * (CHUNK + TAG)], sealed[body + 2 * (CHUNK + TAG) :]]
    head = sealed[:body]
    mac_line = sealed.index(b"\n---") + 5
    return {
        "truncated header": sealed[:40],
        "truncated mid-chunk": sealed[: body + 1000],
        "final chunk dropped": head + chunks[0] + chunks[1],
        "last byte dropped": sealed[:-1],
        "chunks reordered": head + chunks[1] + chunks[0] + chunks[2],
        "chunk duplicated": head + chunks[0] + chunks[0] + chunks[1] + chunks[2],
        "trailing garbage": sealed + b"\x00",
        "bit flipped in version line": bytes([sealed[0] ^ 1]) + sealed[1:],
        "bit flipped in stanza": sealed[:30] + bytes([sealed[30] ^ 1]) + sealed[31:],
        "bit flipped in mac": sealed[:mac_line] + bytes([sealed[mac_line] ^ 2]) + sealed[mac_line + 1 :],
        "bit flipped in nonce": sealed[:start] + bytes([sealed[start] ^ 1]) + sealed[start + 1 :],
        "bit flipped in payload": sealed[: body + 500] + bytes([sealed[body + 500] ^ 1]) + sealed[body + 501 :],
        "bit flipped in a tag": sealed[:-1] + bytes([sealed[-1] ^ 0x80]),
        "empty file": b"",
        "padding in base64": sealed.replace(b"\n---", b"=\n---", 1),
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutations_fail_with_one_opaque_error(name):
    with pytest.raises(AgeError) as error:
        decrypt(MUTATIONS[name], [IDENTITY])
    assert str(error.value) == OPAQUE


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_streaming_never_yields_an_unverified_chunk(name):
    plaintext, _, _ = _sealed()
    received = b""
    with pytest.raises(AgeError):
        for chunk in decrypt_stream(io.BytesIO(MUTATIONS[name]), [IDENTITY]):
            received += chunk
    assert received != plaintext and plaintext.startswith(received)


def test_wrong_identity_is_the_same_opaque_error():
    _, sealed, _ = _sealed(100)
    with pytest.raises(AgeError) as error:
        decrypt(sealed, [Identity.generate()])
    assert str(error.value) == OPAQUE


def test_every_single_bit_flip_of_a_small_file_is_caught():
    sealed = encrypt(b"hello, parents", IDENTITY.recipient)
    for index in range(len(sealed)):
        for bit in (0x01, 0x80):
            damaged = sealed[:index] + bytes([sealed[index] ^ bit]) + sealed[index + 1 :]
            with pytest.raises(AgeError):
                decrypt(damaged, [IDENTITY])


def test_header_parser_ignores_other_recipient_types():
    sealed = encrypt(b"data", IDENTITY.recipient)
    foreign = sealed.replace(b"-> X25519", b"-> example.com/other abc\nAAAA\n-> X25519", 1)
    header = read_header(io.BytesIO(foreign))
    assert [s.args[0] for s in header.stanzas] == [b"example.com/other", b"X25519"]
    with pytest.raises(AgeError):  # the MAC covers the whole header, so the insertion is detected
        decrypt(foreign, [IDENTITY])


@pytest.mark.parametrize("vector", SPEC["files"], ids=[f["file"] for f in SPEC["files"]])
def test_committed_vectors_open_with_debian_age(vector):
    need_age()
    opened = subprocess.run(
        ["age", "-d", "-i", str(VECTORS / "identity.txt"), str(VECTORS / vector["file"])], capture_output=True, check=True
    )
    assert hashlib.sha256(opened.stdout).hexdigest() == vector["sha256"]
