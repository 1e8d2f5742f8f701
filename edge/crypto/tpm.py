"""The TPM vault: the root key in a TPM 2.0 NV index, through tpm2-pytss.

The root is not a blob sealed to the TPM and kept on disk: such a blob opens as long as
its parent key exists, so deleting it destroys nothing a copy of the card still holds.
It lives *in* the chip's non-volatile memory instead, in one of two NV indices, INDEX and
INDEX + 1. Which of them is the "current" slot (the other is "next") is recorded in
DATA_DIR/tpm-vault, so that a ratchet costs two NV writes and no define or undefine:

| vault op          | TPM command                                              |
|-------------------|----------------------------------------------------------|
| read              | NV_ReadPublic, then NV_Read (32 zero bytes: empty)       |
| write "next"      | NV_DefineSpace (only the first time), NV_Write           |
| write "current"   | none when "next" holds that root: the marker swaps the   |
|                   | two slots (atomically, on disk); else as for "next"      |
| erase             | NV_Write of 32 zero bytes (skipped when already empty)   |

A TPM's NV memory wears out with writes (vendors quote hundreds of thousands), and a
shred ratchets the root, so every NV write saved counts on a device kept for years.

Both indices take an authorization value of 32 random bytes kept in the marker (0600):
another local user who may open the TPM cannot read the root, and a second data folder
configured with the same index gets a clear error instead of the other's root. A copy of
the card holds that value too, which does not matter: a root overwritten in the chip is
gone, whatever authorizes its index, and the marker never holds a root.

Each call opens its own short connection, because a TPM simulator (and a Pi without the
kernel's resource manager) serves one client at a time, and the agent and a command
such as `status` both read the root. Each call also reads the marker again: another
process (a `purge` beside the agent) may have swapped the slots since.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.crypto.guarantee import GuaranteeLevel
from edge.disk.files import read_in, write_atomic_in
from edge.disk.layout import TPM_MARKER
from edge.disk.versioned import TPM_VAULT_MARKER
from edge.errors import VaultError
from edge.values import VaultBackend

if TYPE_CHECKING:
    from tpm2_pytss import ESAPI

ROOT_BYTES = 32
AUTH_BYTES = 32
EMPTY = bytes(ROOT_BYTES)
"""What an erased slot holds (a random root is never all zeros)."""
OWNER_NV_FIRST = 0x01000000
OWNER_NV_LAST = 0x013FFFFF
"""The NV index range the TCG reserves for the TPM's owner (edge uses INDEX and INDEX + 1)."""
ENABLE_TPM_ON_A_PI = (
    "On a Raspberry Pi with a TPM HAT (SLB9670), add dtoverlay=tpm-slb9670 to /boot/firmware/config.txt and "
    "reboot; /dev/tpmrm0 must exist and be readable by this user (group tss)"
)

_RC_HANDLE = 0x8B  # TPM_RC_HANDLE (format 1): no NV index at that handle
_RC_NV_UNINITIALIZED = 0x14A  # defined, never written (a crash between define and write)
_RC_BAD_AUTH = 0xA2  # TPM_RC_BAD_AUTH (format 1): a wrong authorization value


@dataclass(frozen=True)
class TpmMarker:
    """DATA_DIR/tpm-vault: which NV indices hold this folder's root, which of the two is the
    "current" slot, and how to open them.

    Written before the first index is defined, so a crash never leaves an index no marker
    describes. The index is recorded, not taken from the config each time, so a config
    that later names another index is an error rather than a lost root. Version 1 (no
    `current`) had "current" at INDEX always; it is read as current = 0."""

    index: int
    """NV index of the first slot; the other is index + 1."""
    auth: bytes
    """Authorization value of both indices."""
    current: int = 0
    """Which index is the "current" slot: index + current (0 or 1); "next" is the other."""

    def to_json(self) -> bytes:
        return TPM_VAULT_MARKER.dump({"index": self.index, "auth": self.auth.hex(), "current": self.current})

    def index_of(self, slot: str) -> int:
        return self.index + (self.current if slot == "current" else 1 - self.current)

    @classmethod
    def load(cls, data_dir: Path) -> TpmMarker | None:
        raw = read_in(data_dir, TPM_MARKER)
        if raw is None:
            return None
        version, document = TPM_VAULT_MARKER.load(raw, data_dir / TPM_MARKER)
        try:
            current = 0 if version == 1 else document["current"]
            if current not in (0, 1) or isinstance(current, bool):
                raise ValueError
            marker = cls(int(document["index"]), bytes.fromhex(document["auth"]), current)
            if not OWNER_NV_FIRST <= marker.index < OWNER_NV_LAST or len(marker.auth) != AUTH_BYTES:
                raise ValueError
            return marker
        except (ValueError, KeyError, TypeError):
            raise TPM_VAULT_MARKER.malformed(data_dir / TPM_MARKER) from None


def _library() -> Any:
    """tpm2_pytss, imported only when a TPM vault is used (it is an optional extra)."""
    os.environ.setdefault("TSS2_LOG", "all+NONE")  # the TSS logs every TPM error code to stderr otherwise
    try:
        import tpm2_pytss
    except ImportError:
        raise VaultError(
            '[vault] backend = "tpm" needs the TPM library tpm2-pytss, which is not installed: install edge with '
            'its "tpm" extra (scripts/install.sh --tpm, or pip install ".[tpm]")'
        ) from None
    return tpm2_pytss


class TpmVault:
    """Root in a TPM 2.0 NV index: survives reboots, and its destruction is real."""

    level = GuaranteeLevel(
        VaultBackend.TPM,
        survives_reboot=True,
        crypto_erase=True,
        summary="root key in a TPM 2.0 NV index: retained data survives reboots, and destroying a key is real even "
        "against a copy of the flash storage (the TPM's memory is not on the card)",
    )

    def __init__(self, data_dir: Path, tcti: str, nv_index: int) -> None:
        self.data_dir = data_dir
        self.tcti = tcti
        self.index = nv_index
        self._tss = _library()
        self._marker = self._load_marker()
        with self._connection("connecting"):
            pass  # fail now, with a clear error, if no TPM answers

    # -- the slots -----------------------------------------------------------------

    def read(self, slot: str) -> bytes | None:
        self._marker = self._load_marker()
        with self._connection(f"reading the root ({slot})") as tpm:
            return self._read(tpm, self._index(slot))

    def write(self, slot: str, root: bytes) -> None:
        if len(root) != ROOT_BYTES or root == EMPTY:
            raise VaultError("a root key must be 32 bytes and not all zeros (a bug in edge)")
        self._marker = self._load_marker()
        with self._connection(f"storing the root ({slot})") as tpm:
            if slot == "current" and self._marker is not None:
                staged = self._read(tpm, self._index("next"))
                if staged is not None and hmac.compare_digest(staged, root):  # the ratchet's commit: swap, write nothing
                    self._save_marker(replace(self._marker, current=1 - self._marker.current))
                    return
            index = self._index(slot)
            handle = self._handle(tpm, index)  # without a marker yet, any index there is someone else's
            if handle is None:
                if self._marker is None:  # before the index, so none exists that no marker describes
                    self._save_marker(TpmMarker(self.index, os.urandom(AUTH_BYTES)))
                assert self._marker is not None
                handle = tpm.nv_define_space(self._marker.auth, self._public(index))
                tpm.tr_set_auth(handle, self._marker.auth)
            tpm.nv_write(handle, root)

    def erase(self, slot: str) -> None:
        self._marker = self._load_marker()
        with self._connection(f"destroying the root ({slot})") as tpm:
            index = self._index(slot)
            handle = self._handle(tpm, index)
            if handle is None:
                return
            held = self._read_handle(tpm, handle)  # also proves the index is this folder's before writing it
            if held is not None:
                tpm.nv_write(handle, EMPTY)

    def scrub(self) -> None:
        """Nothing to scrub: no copy of the root is ever on disk."""

    def why_missing(self) -> str:
        """Neither index holds a root although a keystore exists: never a reason to start afresh
        by itself, since another TPM (or a config naming the wrong one) looks just the same."""
        where = f"[vault] tcti = {self.tcti!r}, nv_index = {self.index:#010x}"
        if self._marker is None:
            raise VaultError(
                f"{self.data_dir}: holds a keystore but no TPM vault marker ({TPM_MARKER}), so its root is not in a TPM "
                f"({where}). If it was kept by another vault, set that [vault] backend again (or move it with "
                "`edge-agent vault migrate --to tpm`). Nothing was changed."
            )
        raise VaultError(
            f"{where}: the TPM holds no root key for {self.data_dir}. First check that tcti names this device's TPM "
            "(a TPM simulator, another board): nothing was changed, and the data opens again once it does. Only if "
            "the TPM was cleared (tpm2_clear, a firmware reset) can that data never be opened; then move the data "
            "folder aside to start afresh."
        )

    # -- the TPM -------------------------------------------------------------------

    def _load_marker(self) -> TpmMarker | None:
        marker = TpmMarker.load(self.data_dir)
        if marker is not None and marker.index != self.index:
            raise VaultError(
                f"[vault] nv_index = {self.index:#010x}, but the root of {self.data_dir} is at NV index "
                f"{marker.index:#010x} ({self.data_dir / TPM_MARKER}). Set nv_index = {marker.index:#010x}; "
                "nothing was changed."
            )
        return marker

    def _save_marker(self, marker: TpmMarker) -> None:
        write_atomic_in(self.data_dir, TPM_MARKER, marker.to_json())  # fsynced: the swap is durable before any erase
        self._marker = marker

    def _index(self, slot: str) -> int:
        if slot not in ("current", "next"):
            raise ValueError(slot)
        return self._marker.index_of(slot) if self._marker is not None else self.index + (slot == "next")

    def _read(self, tpm: ESAPI, index: int) -> bytes | None:
        handle = self._handle(tpm, index)
        return None if handle is None else self._read_handle(tpm, handle)

    def _read_handle(self, tpm: ESAPI, handle: Any) -> bytes | None:
        """The root an index holds; None when it was defined but never written (a crash between
        define and write) or erased."""
        try:
            data = bytes(tpm.nv_read(handle, ROOT_BYTES))
        except self._tss.TSS2_Exception as exc:
            if exc.error == _RC_NV_UNINITIALIZED:
                return None
            raise
        if len(data) != ROOT_BYTES:
            raise VaultError(f"a TPM NV index of {self.data_dir}: holds {len(data)} bytes, not a root key")
        return None if data == EMPTY else data

    def _public(self, index: int) -> Any:
        tss = self._tss
        return tss.TPM2B_NV_PUBLIC(
            nvPublic=tss.TPMS_NV_PUBLIC(nvIndex=index, nameAlg=tss.TPM2_ALG.SHA256, attributes=self._attributes(), dataSize=ROOT_BYTES)
        )

    def _attributes(self) -> int:
        nv = self._tss.TPMA_NV
        return int(nv.AUTHREAD | nv.AUTHWRITE | nv.NO_DA)  # NO_DA: a wrong value never locks the TPM out

    def _handle(self, tpm: ESAPI, index: int) -> Any:
        """The ESYS handle of one of the folder's indices with its authorization set; None if undefined."""
        try:
            handle = tpm.tr_from_tpmpublic(index)
        except self._tss.TSS2_Exception as exc:
            if exc.error == _RC_HANDLE:
                return None
            raise
        public, _name = tpm.nv_read_public(handle)
        attributes = int(public.nvPublic.attributes) & ~int(self._tss.TPMA_NV.WRITTEN)
        if public.nvPublic.dataSize != ROOT_BYTES or attributes != self._attributes() or self._marker is None:
            raise VaultError(
                f"TPM NV index {index:#010x} is in use by something other than this data folder ({self.data_dir}); "
                "choose another [vault] nv_index (edge uses it and the next one). Nothing was changed."
            )
        tpm.tr_set_auth(handle, self._marker.auth)
        return handle

    @contextmanager
    def _connection(self, doing: str) -> Iterator[ESAPI]:
        """One connection for one operation; every TPM failure becomes a VaultError that says
        what was being done (the keystore then keeps the root it had: nothing is lost)."""
        tss = self._tss
        try:
            tpm = tss.ESAPI(self.tcti)
        except (tss.TSS2_Exception, ValueError, OSError) as exc:
            raise VaultError(
                f"[vault] tcti = {self.tcti!r}: no TPM answers there ({exc}). {ENABLE_TPM_ON_A_PI}. Nothing was changed."
            ) from None
        try:
            yield tpm
        except tss.TSS2_Exception as exc:
            if exc.error == _RC_BAD_AUTH:
                raise VaultError(
                    f"TPM NV index {self.index:#010x}: this data folder's authorization ({self.data_dir / TPM_MARKER}) "
                    "does not open it: it holds another data folder's root, or the TPM owner has a password (edge "
                    "needs the owner hierarchy's authorization empty). Choose another [vault] nv_index. Nothing was changed."
                ) from None
            raise VaultError(
                f"the TPM ({self.tcti}) failed while {doing}: {exc}. The keystore keeps the root it had, so nothing "
                "retained is lost; it opens again once the TPM answers."
            ) from None
        finally:
            tpm.close()
