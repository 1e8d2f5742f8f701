"""Vaults hold the root key: the one secret that opens the keystore.

Crypto-shredding is only as real as the place where the root lives, so each
vault states its guarantee level honestly (README, `status`, `doctor`):

| backend | root lives in            | survives reboot | crypto-erase real against a flash image |
|---------|--------------------------|-----------------|------------------------------------------|
| keyring | the kernel keyring (RAM) | no              | yes                                      |
| file    | a 0600 file              | yes             | no: logical deletion only                |

A vault has two slots, "current" and "next", so that replacing the root (the
ratchet) survives a crash at any instant: the new root is staged in "next",
the keystore is re-sealed under it, then it becomes "current".
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge.config import VaultSettings
from edge.crypto import keyring
from edge.errors import EdgeError
from edge.store.files import atomic_write, fsync_dir

ROOT_BYTES = 32
SLOTS = ("current", "next")


class VaultError(EdgeError):
    """The root key could not be stored or read."""


@dataclass(frozen=True)
class GuaranteeLevel:
    backend: str
    survives_reboot: bool
    """Whether retained data can still be opened after a power cut."""
    crypto_erase: bool
    """Whether destroying a key is real against a copy of the flash storage."""
    summary: str

    def to_json(self) -> dict:
        return {
            "backend": self.backend,
            "level": "crypto-erase" if self.crypto_erase else "logical-deletion",
            "survives_reboot": self.survives_reboot,
            "crypto_erase": self.crypto_erase,
            "summary": self.summary,
        }


class Vault(Protocol):
    level: GuaranteeLevel

    def read(self, slot: str) -> bytes | None: ...
    def write(self, slot: str, root: bytes) -> None: ...
    def erase(self, slot: str) -> None: ...


class KeyringVault:
    """Root in the kernel keyring: never on disk, gone at power-off."""

    level = GuaranteeLevel(
        "keyring",
        survives_reboot=False,
        crypto_erase=True,
        summary="root key in the kernel keyring (RAM): everything retained is shredded at power-off; "
        "destroying a key is real even against a copy of the flash storage",
    )

    def __init__(self, data_dir: Path, ring: str = "persistent") -> None:
        # One root per data folder, so several installs (or tests) never share a key.
        self._prefix = "edge:" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
        self._persistent = ring != "session"
        self._ring()  # fail now, with a clear error, if the keyring is unavailable

    def _ring(self) -> int:
        """The keyring to use. Asking for the persistent keyring also restarts its expiry timer
        (/proc/sys/kernel/keys/persistent_keyring_expiry), so every use keeps the root alive."""
        return keyring.persistent_keyring() if self._persistent else keyring.SESSION_KEYRING

    def _description(self, slot: str) -> str:
        return f"{self._prefix}:{slot}"

    def read(self, slot: str) -> bytes | None:
        serial = keyring.find(self._description(slot), self._ring())
        return None if serial is None else keyring.read(serial)

    def write(self, slot: str, root: bytes) -> None:
        keyring.add(self._description(slot), root, self._ring())

    def erase(self, slot: str) -> None:
        serial = keyring.find(self._description(slot), self._ring())
        if serial is not None:
            keyring.invalidate(serial)


class FileVault:
    """Root in a 0600 file. Survives reboots; deletion is logical only on flash."""

    level = GuaranteeLevel(
        "file",
        survives_reboot=True,
        crypto_erase=False,
        summary="root key in a 0600 file: retained data survives reboots, but flash storage keeps old "
        "blocks, so a copy of the card may still hold old root keys: deletion is logical only",
    )

    def __init__(self, path: Path) -> None:
        self.path = path

    def _path(self, slot: str) -> Path:
        return self.path if slot == "current" else self.path.with_name(self.path.name + "." + slot)

    def read(self, slot: str) -> bytes | None:
        try:
            data = self._path(slot).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VaultError(f"{self._path(slot)}: cannot read the root key file: {exc.strerror}") from None
        if len(data) != ROOT_BYTES:
            raise VaultError(f"{self._path(slot)}: is not a root key file (expected {ROOT_BYTES} bytes)")
        return data

    def write(self, slot: str, root: bytes) -> None:
        atomic_write(self._path(slot), root)

    def erase(self, slot: str) -> None:
        path = self._path(slot)
        try:
            with path.open("r+b") as handle:  # overwrite first: helps on disks, not on flash
                handle.write(bytes(ROOT_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            path.unlink()
            fsync_dir(path.parent)
        except FileNotFoundError:
            pass


def open_vault(settings: VaultSettings, data_dir: Path) -> Vault:
    if settings.backend == "keyring":
        try:
            return KeyringVault(data_dir, settings.keyring)
        except keyring.KeyringError as exc:
            raise VaultError(
                f'[vault] backend = "keyring": {exc}. The kernel keyring is unavailable here '
                '(some containers block it); use backend = "file" with a path.'
            ) from None
    if settings.backend == "file":
        assert settings.path is not None
        return FileVault(settings.path)
    raise VaultError(
        '[vault] backend = "tpm" is not available in this version of edge; use "keyring" (crypto-erase, '
        'lost at power-off) or "file" (survives reboots, logical deletion only)'
    )
