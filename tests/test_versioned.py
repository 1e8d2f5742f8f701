"""Versioned state files: one declaration each (edge/disk/versioned.py), one refusal for a
version this edge does not read, and docs/FORMATS.md's table in step with the code."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edge import wiring
from edge.audit.log import AuditLog
from edge.crypto.tpm import TpmMarker
from edge.crypto.vault import FileVault, KeyringMarker
from edge.disk.versioned import AUDIT_HEADER, KEYSTORE_V1, TPM_VAULT_MARKER, VERSIONED_FILES, VersionedFile
from edge.errors import AuditError, KeystoreError, StorageError, VaultError
from edge.events import ProfileActive
from edge.retention.clock import TrustedClock
from edge.store.legacy import open_v1
from edge.values import KeyringKind

from support import ROOT, file_vault

FORMATS = ROOT / "docs" / "FORMATS.md"


def formats_table() -> dict[str, tuple[str, tuple[int, ...], int | None]]:
    """docs/FORMATS.md's "Versioned files": file -> (format cell, versions read, version written)."""
    section = FORMATS.read_text(encoding="utf-8").split("\n## Versioned files\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        file, form, reads, writes = (cell.strip() for cell in line.strip("|").split("|"))
        written = None if writes.startswith("none") else int(writes)
        rows[file.strip("`")] = (form, tuple(int(v) for v in reads.split(",")), written)
    return rows


def test_the_formats_table_is_the_code():
    """A new version is one change: the declaration, then FORMATS.md's row (this fails until both say it)."""
    table = formats_table()
    assert sorted(table) == sorted(f.file for f in VERSIONED_FILES), "docs/FORMATS.md: Versioned files"
    for declared in VERSIONED_FILES:
        form, reads, writes = table[declared.file]
        assert (reads, writes) == (declared.reads, declared.writes), declared.file
        assert declared.version_key in form, declared.file
        if declared.tag is not None:
            assert f'"format": "{declared.tag}"' in form, declared.file
        for name, value in declared.fixed.items():
            assert f'"{name}": "{value}"' in form, declared.file


def test_the_versions_read_are_said_alike():
    def versions(*reads: int) -> str:
        return VersionedFile("f", "a file", reads, reads[-1], StorageError).readable()

    assert (versions(1), versions(1, 2), versions(1, 2, 3), versions(1, 3, 4)) == (
        "version 1",
        "versions 1 and 2",
        "versions 1 to 3",
        "versions 1, 3, 4",
    )


def _refusal(error: pytest.ExceptionInfo[Exception], where: Path, what: str, found: int, reads: str) -> None:
    """The one sentence: file, what it is, the version found, those read, a newer edge's hint."""
    assert str(error.value) == (
        f"{where}: {what} of format version {found}; this edge reads {reads} (written by a newer edge? update edge). Nothing was changed."
    )
    assert getattr(error.value, "path", None) == where


def test_a_keyring_marker_of_a_newer_edge_is_refused_in_words(tmp_path):
    marker = KeyringMarker("edge:0123456789abcdef", KeyringKind.SESSION, 1000, "boot")
    (tmp_path / "vault").write_bytes(marker.to_json())
    assert KeyringMarker.load(tmp_path) == marker
    document = json.loads(marker.to_json())
    assert list(document)[:3] == ["format", "version", "backend"] and document["backend"] == "keyring"
    (tmp_path / "vault").write_text(json.dumps({**document, "version": 2}))
    with pytest.raises(VaultError) as error:
        KeyringMarker.load(tmp_path)
    _refusal(error, tmp_path / "vault", "an edge vault marker", 2, "version 1")
    (tmp_path / "vault").write_text("{not json")
    with pytest.raises(VaultError, match=r"vault: is not an edge vault marker \(format version 1\); it says which kernel key"):
        KeyringMarker.load(tmp_path)


def test_a_tpm_marker_of_a_newer_edge_is_refused_in_words(tmp_path):
    marker = TpmMarker(0x0100ED60, bytes(range(32)), 1)
    expected = {"format": "edge-vault", "version": 2, "backend": "tpm", "index": 0x0100ED60, "auth": bytes(range(32)).hex(), "current": 1}
    assert marker.to_json() == json.dumps(expected).encode()  # byte for byte what FORMATS section 5 shows
    (tmp_path / "tpm-vault").write_text(json.dumps({**expected, "version": 3}))
    with pytest.raises(VaultError) as error:
        TpmMarker.load(tmp_path)
    _refusal(error, tmp_path / "tpm-vault", "an edge TPM vault marker", 3, "versions 1 and 2")
    (tmp_path / "tpm-vault").write_text(json.dumps({**expected, "backend": "keyring"}))
    with pytest.raises(VaultError, match=r"is not an edge TPM vault marker \(format version 1 or 2\)"):
        TpmMarker.load(tmp_path)


def test_a_clock_mark_of_a_newer_edge_is_refused_in_words(tmp_path):
    clock = TrustedClock(tmp_path)
    clock.persist()  # writes the mark
    mark = json.loads((tmp_path / "clock").read_text())
    assert mark["version"] == 1
    (tmp_path / "clock").write_text(json.dumps({**mark, "version": 2}))
    with pytest.raises(StorageError) as error:
        TrustedClock(tmp_path).read()
    assert str(error.value).startswith(
        f"{tmp_path / 'clock'}: the clock's high-water mark of format version 2; this edge reads version 1 ("
    )
    assert "a clock set back would lengthen retention" in str(error.value) and error.value.path == tmp_path / "clock"
    (tmp_path / "clock").write_text("[]")  # damaged: only the protection against a set-back is lost, as before
    assert TrustedClock(tmp_path).read().now is not None


def test_a_keystore_of_a_newer_edge_is_refused_in_words(load, tmp_path):
    config = load(vault=file_vault(tmp_path / "root.key"))
    store, _audit = wiring.open_store(config, vault=FileVault(tmp_path / "root.key"))
    store.read()
    path = config.device.data_dir / "keystore.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 3")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(KeystoreError) as error:
        wiring.open_store(config, vault=FileVault(tmp_path / "root.key"))[0].read()
    _refusal(error, path, "an edge keystore", 3, "version 2")
    assert path.read_bytes() == before


def test_a_v1_keystore_of_another_version_is_refused_in_words():
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from edge.store.legacy import MAGIC
    from edge.store.rows import derive, seal

    root = bytes(range(32))
    document = json.dumps({"format": "edge-keystore", "version": 2}).encode()
    sealed = MAGIC + seal(ChaCha20Poly1305(derive(root, b"edge/v1 keystore")), document, MAGIC)
    with pytest.raises(KeystoreError) as error:
        open_v1(root, sealed)
    assert str(error.value) == (
        f"keystore: {KEYSTORE_V1.what} of format version 2; this edge reads version 1 (written by a newer edge? update edge). "
        "Nothing was changed."
    )


def test_an_audit_log_of_a_newer_edge_is_never_signed(tmp_path):
    log = AuditLog(tmp_path)
    log.append(ProfileActive(profile="child"))
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    first = json.loads(lines[0])
    assert first["fields"][AUDIT_HEADER.version_key] == AUDIT_HEADER.writes
    first["fields"]["format"] = 2
    (tmp_path / "audit.jsonl").write_bytes(json.dumps(first).encode() + b"\n" + b"".join(lines[1:]))
    before = (tmp_path / "audit.jsonl").read_bytes()
    with pytest.raises(AuditError) as error:
        AuditLog(tmp_path).checkpoint()
    _refusal(error, tmp_path / "audit.jsonl", "an edge audit log", 2, "version 1")
    assert (tmp_path / "audit.jsonl").read_bytes() == before


def test_every_declaration_loads_what_it_dumps():
    for declared in VERSIONED_FILES:
        if declared.writes is None or declared.version_key.startswith("PRAGMA"):
            continue
        assert declared.load(declared.dump({"x": 1}), "f") == (declared.writes, declared.stamp({"x": 1}))
    assert TPM_VAULT_MARKER.check({"format": "edge-vault", "version": 1, "backend": "tpm"}, "f") == 1
