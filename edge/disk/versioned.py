"""Edge's versioned state files: each one's format declared once, read and written the same way.

A file edge keeps across upgrades says which version of its format it holds. A reader that
meets a version it does not know MUST stop and change nothing (a newer edge wrote it, and
reading it as an older one could lose a guarantee), and every file says so in the same
sentence: the file, the version found, the versions this edge reads. The table at the end
is docs/FORMATS.md's "Versioned files", checked against it by tests/test_versioned.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.disk.layout import AUDIT_LOG, CLOCK, KEYSTORE, KEYSTORE_DB, TPM_MARKER, VAULT_MARKER
from edge.errors import AuditError, EdgeError, KeystoreError, StorageError, VaultError


@dataclass(frozen=True)
class VersionedFile:
    """One versioned file: what it is, how it names its format and version, which versions
    this edge reads and which it writes, and the error a reader raises."""

    file: str
    """Its name in the data folder."""
    what: str
    """What it is, in words ("the keyring vault's marker")."""
    reads: tuple[int, ...]
    """Every version this edge reads, oldest first."""
    writes: int | None
    """The version this edge writes; None when it only reads the file (to migrate it)."""
    error: type[EdgeError]
    """What a reader raises: the error class of the part the file belongs to."""
    tag: str | None = None
    """The value of its "format" member, when it has one ("edge-vault")."""
    version_key: str = "version"
    """The member that holds the version."""
    fixed: Mapping[str, str] = field(default_factory=dict)
    """Other members every version holds as they are here (the TPM marker's "backend")."""
    about: str = ""
    """What it is for, in a clause ("it says which kernel key holds the root")."""
    newer: str = "written by a newer edge? update edge"
    """What a version above the newest read most likely means, and what to do."""

    def written(self) -> int:
        """The version this edge writes (for a file it writes)."""
        assert self.writes is not None, f"edge does not write {self.file}"
        return self.writes

    def dump(self, fields: Mapping[str, Any]) -> bytes:
        """The document in the version this edge writes: its format, version, fixed members, then `fields`."""
        assert self.writes is not None, f"edge does not write {self.file}"
        return json.dumps(self.stamp(fields)).encode()

    def stamp(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """`fields` with the format, version and fixed members in front (for a header inside a larger file)."""
        assert self.writes is not None, f"edge does not write {self.file}"
        head: dict[str, Any] = {"format": self.tag} if self.tag is not None else {}
        return {**head, self.version_key: self.writes, **self.fixed, **fields}

    def load(self, raw: bytes, where: Path | str) -> tuple[int, dict[str, Any]]:
        """(version, document) of the bytes read from `where`; the error when they are not
        this file's JSON object or of a version this edge does not read."""
        document = decode(raw)
        if document is None:
            raise self.malformed(where)
        return self.check(document, where), document

    def check(self, document: Mapping[str, Any], where: Path | str) -> int:
        """The version of a parsed document; the error when it is not this file's or of a
        version this edge does not read."""
        if self.tag is not None and document.get("format") != self.tag:
            raise self.malformed(where)
        if any(document.get(name) != value for name, value in self.fixed.items()):
            raise self.malformed(where)
        version = document.get(self.version_key)
        if type(version) is not int:
            raise self.malformed(where)
        return self.require(version, where)

    def require(self, version: int, where: Path | str) -> int:
        """`version` when this edge reads it; else the one refusal every versioned file gives."""
        if version in self.reads:
            return version
        hint = f" ({self.newer})" if version > max(self.reads) else ""
        raise self.error(
            f"{where}: {self.what} of format version {version}; this edge reads {self.readable()}{hint}. Nothing was changed.",
            path=where if isinstance(where, Path) else None,
        )

    def malformed(self, where: Path | str) -> EdgeError:
        """The error for a file that is not this one at all (not JSON, another format, a
        member missing or of the wrong kind)."""
        about = f"; {self.about}" if self.about else ""
        return self.error(
            f"{where}: is not {self.what} (format version {self.readable(plain=True)}){about}. Nothing was changed.",
            path=where if isinstance(where, Path) else None,
        )

    def readable(self, plain: bool = False) -> str:
        """The versions read, in words: "version 1", "versions 1 and 2", "versions 1 to 3"."""
        versions = self.reads
        if len(versions) == 1:
            text = str(versions[0])
        elif len(versions) == 2:
            text = f"{versions[0]} or {versions[1]}" if plain else f"{versions[0]} and {versions[1]}"
        elif versions == tuple(range(versions[0], versions[-1] + 1)):
            text = f"{versions[0]} to {versions[-1]}"
        else:
            text = ", ".join(str(v) for v in versions)
        return text if plain else ("version " if len(versions) == 1 else "versions ") + text


def decode(raw: bytes) -> dict[str, Any] | None:
    """A JSON object, or None when `raw` is not one."""
    try:
        document = json.loads(raw)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        return None
    return document if isinstance(document, dict) else None


KEYSTORE_V2 = VersionedFile(KEYSTORE_DB, "an edge keystore", (2,), 2, KeystoreError, version_key="PRAGMA user_version")
KEYSTORE_V1 = VersionedFile(KEYSTORE, "a sealed keystore", (1,), None, KeystoreError, tag="edge-keystore")
KEYRING_MARKER = VersionedFile(
    VAULT_MARKER,
    "an edge vault marker",
    (1,),
    1,
    VaultError,
    tag="edge-vault",
    fixed={"backend": "keyring"},
    about="it says which kernel key holds the root",
)
TPM_VAULT_MARKER = VersionedFile(
    TPM_MARKER,
    "an edge TPM vault marker",
    (1, 2),
    2,
    VaultError,
    tag="edge-vault",
    fixed={"backend": "tpm"},
    about="it says which TPM NV index holds the root",
)
CLOCK_MARK = VersionedFile(
    CLOCK,
    "the clock's high-water mark",
    (1,),
    1,
    StorageError,
    newer="written by a newer edge? update edge; without the file, a clock set back would lengthen retention",
)
AUDIT_HEADER = VersionedFile(AUDIT_LOG, "an edge audit log", (1,), 1, AuditError, version_key="format")
"""Line 1 of the log, `log.created`: its fields name the format."""

VERSIONED_FILES = (KEYSTORE_V2, KEYSTORE_V1, KEYRING_MARKER, TPM_VAULT_MARKER, CLOCK_MARK, AUDIT_HEADER)
"""Every versioned file edge keeps, in docs/FORMATS.md's order."""
