"""What every vault is: the protocol the keystore uses, and the guarantee level each
vault states honestly (see edge.crypto.vault for the table). Its own module so that each
backend (vault.py's, tpm.py's) depends on it and never on another backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from edge.values import VaultBackend

ROOT_BYTES = 32
SLOTS = ("current", "next")


@dataclass(frozen=True)
class GuaranteeLevel:
    backend: VaultBackend
    survives_reboot: bool
    """Whether retained data can still be opened after a power cut."""
    crypto_erase: bool
    """Whether destroying a key is real against a copy of the flash storage."""
    summary: str

    def to_json(self) -> dict[str, Any]:
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
    def scrub(self) -> None:
        """Destroy stale copies of the root a crashed write left (under the data-folder lock)."""

    def why_missing(self) -> str:
        """Why a root that a keystore needs is gone; VaultError if it may only be invisible here."""
