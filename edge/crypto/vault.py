"""Vaults hold the root key: the one secret that opens the keystore.

Crypto-shredding is only as real as the place where the root lives, so each
vault states its guarantee level honestly (README, `status`, `doctor`):

| backend | root lives in            | survives reboot | crypto-erase real against a flash image |
|---------|--------------------------|-----------------|------------------------------------------|
| keyring | the kernel keyring (RAM) | no              | yes                                      |
| ram     | this process's memory    | no              | yes (the demo)                           |
| tpm     | a TPM 2.0 NV index       | yes             | yes (edge.crypto.tpm)                    |
| file    | a 0600 file              | yes             | no: logical deletion only                |

A vault has two slots, "current" and "next", so that replacing the root (the
ratchet) survives a crash at any instant: the new root is staged in "next",
the keystore is re-sealed under it, then it becomes "current".
"""

from __future__ import annotations

import hashlib
import os
import pwd
from dataclasses import asdict, dataclass
from pathlib import Path

from edge.boot import boot_id
from edge.crypto import keyring
from edge.crypto.guarantee import ROOT_BYTES, SLOTS, GuaranteeLevel
from edge.disk.files import atomic_write, destroy_temps, exists_in, folder_fd, open_in, read_in, unlink_in, write_atomic_in
from edge.disk.layout import TPM_MARKER, VAULT_MARKER
from edge.disk.versioned import KEYRING_MARKER
from edge.errors import KeyringError, StorageError, VaultError
from edge.values import KeyringKind, VaultBackend


@dataclass(frozen=True)
class KeyringMarker:
    """DATA_DIR/vault: which kernel key holds this folder's root, and what a missing key means.

    Written whenever a root is put into the keyring by a user or in a boot the marker does
    not name yet (a new folder, or a fresh root after a restart), so a later process can
    tell "gone" (the device restarted: RAM keys do not survive it) from "not visible here"
    (another user, another session keyring). The key's name is recorded, not derived from
    the folder's path, so a data folder that is moved keeps its key."""

    key: str
    """Description prefix of the kernel keys ("edge:<16 hex>"; slots append ":current", ":next")."""
    ring: KeyringKind
    """Where the key was put."""
    uid: int
    """The user whose keyring holds it."""
    boot: str
    """The kernel boot id when it was put there."""

    def to_json(self) -> bytes:
        return KEYRING_MARKER.dump(asdict(self))

    @classmethod
    def load(cls, data_dir: Path) -> KeyringMarker | None:
        raw = read_in(data_dir, VAULT_MARKER)
        if raw is None:
            return None
        _version, document = KEYRING_MARKER.load(raw, data_dir / VAULT_MARKER)
        try:
            marker = cls(str(document["key"]), KeyringKind(document["ring"]), int(document["uid"]), str(document["boot"]))
            if not marker.key.startswith("edge:"):
                raise ValueError
            return marker
        except (ValueError, KeyError, TypeError):
            raise KEYRING_MARKER.malformed(data_dir / VAULT_MARKER) from None


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


class KeyringVault:
    """Root in the kernel keyring: never on disk, gone at power-off."""

    level = GuaranteeLevel(
        VaultBackend.KEYRING,
        survives_reboot=False,
        crypto_erase=True,
        summary="root key in the kernel keyring (RAM): everything retained is shredded at power-off; "
        "destroying a key is real even against a copy of the flash storage",
    )

    def __init__(self, data_dir: Path, ring: KeyringKind = KeyringKind.PERSISTENT) -> None:
        self.data_dir = data_dir
        self._new_ring = ring
        """Where a folder's first root goes; an existing root stays in the ring its marker names."""
        self._marker = KeyringMarker.load(data_dir)
        try:
            self._ring()  # fail now, with a clear error, if the keyring is unavailable
        except KeyringError as exc:
            if ring == KeyringKind.PERSISTENT and not _persistent_keyrings():
                raise VaultError(NO_PERSISTENT_KEYRINGS) from None
            raise VaultError(
                f'[vault] backend = "keyring": {exc}. The kernel keyring is unavailable here '
                '(some containers block it); use backend = "file" with a path.'
            ) from None

    def _key(self) -> str:
        if self._marker is not None:
            return self._marker.key
        # One root per data folder, so several installs (or tests) never share a key.
        return "edge:" + hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]

    def _ring(self) -> int:
        """The keyring to use. Asking for the persistent keyring also restarts its expiry timer
        (/proc/sys/kernel/keys/persistent_keyring_expiry), so every use keeps the root alive."""
        ring = self._marker.ring if self._marker is not None else self._new_ring
        return keyring.persistent_keyring() if ring == KeyringKind.PERSISTENT else keyring.SESSION_KEYRING

    def read(self, slot: str) -> bytes | None:
        self._refuse_other_user()
        serial = keyring.find(f"{self._key()}:{slot}", self._ring())
        return None if serial is None else keyring.read(serial)

    def write(self, slot: str, root: bytes) -> None:
        self._refuse_other_user()
        ring = self._marker.ring if self._marker is not None else self._new_ring
        wanted = KeyringMarker(self._key(), ring, os.geteuid(), boot_id())
        if wanted != self._marker:  # first, so a crash never leaves a key the marker misdescribes
            write_atomic_in(self.data_dir, VAULT_MARKER, wanted.to_json())
            self._marker = wanted
        keyring.add(f"{self._key()}:{slot}", root, self._ring())

    def erase(self, slot: str) -> None:
        self._refuse_other_user()
        serial = keyring.find(f"{self._key()}:{slot}", self._ring())
        if serial is not None:
            keyring.invalidate(serial)

    def scrub(self) -> None:
        """Nothing to scrub: no copy of a kernel key is ever on disk."""

    def _refuse_other_user(self) -> None:
        """The root is in another user's keyring: a key of the same name in this user's own
        (left by an earlier install, say) is not it, and must neither be read (the keystore
        would look damaged) nor replaced (the marker would then name the wrong user)."""
        marker = self._marker
        if marker is not None and marker.uid != os.geteuid():
            raise VaultError(
                f"{self.data_dir}: its root key is in the kernel keyring of {_user(marker.uid)}, which this "
                f"process ({_user(os.geteuid())}) cannot see. Run the command as that user "
                "(e.g. `sudo -u USER edge-agent ...`). Nothing was changed."
            )

    def why_missing(self) -> str:
        """Why the root is *gone*, when neither slot holds it although a keystore exists; raises
        VaultError when it may only be invisible to this process (another user or session)."""
        refuse_if_moved_to_tpm(self.data_dir)
        marker = self._marker
        if marker is None:
            return "the root key is not in the kernel keyring (a power cut or restart clears it)"
        self._refuse_other_user()
        if marker.boot != boot_id():
            return "the device restarted since the root key was made, and the kernel keyring does not survive a restart"
        if marker.ring == KeyringKind.PERSISTENT:
            return (
                "the root key is gone from the persistent keyring (unused for longer than "
                "/proc/sys/kernel/keys/persistent_keyring_expiry, or destroyed)"
            )
        raise VaultError(
            f"{self.data_dir}: its root key is in a session keyring this process does not share. Run the "
            'command inside the keyring session that started the agent, or use keyring = "persistent". '
            "Nothing was changed."
        )


class MemoryVault:
    """Root in this process's memory only (the demo): nothing on disk, nothing in the kernel."""

    level = GuaranteeLevel(
        VaultBackend.RAM,
        survives_reboot=False,
        crypto_erase=True,
        summary="root key in this process's memory only: nothing retained can be opened once it ends",
    )

    def __init__(self) -> None:
        self._slots: dict[str, bytes] = {}

    def read(self, slot: str) -> bytes | None:
        return self._slots.get(slot)

    def write(self, slot: str, root: bytes) -> None:
        self._slots[slot] = root

    def erase(self, slot: str) -> None:
        self._slots.pop(slot, None)

    def scrub(self) -> None:
        """Nothing is ever on disk."""

    def why_missing(self) -> str:
        return "the root key lived in the memory of a process that has ended"


class FileVault:
    """Root in a 0600 file. Survives reboots; deletion is logical only on flash."""

    level = GuaranteeLevel(
        VaultBackend.FILE,
        survives_reboot=True,
        crypto_erase=False,
        summary="root key in a 0600 file: retained data survives reboots, but flash storage keeps old "
        "blocks, so a copy of the card may still hold old root keys: deletion is logical only",
    )

    def __init__(self, path: Path, data_dir: Path | None = None) -> None:
        self.path = path
        self.data_dir = data_dir

    def _path(self, slot: str) -> Path:
        return self.path if slot == "current" else self.path.with_name(self.path.name + "." + slot)

    def read(self, slot: str) -> bytes | None:
        path = self._path(slot)
        try:
            data = read_in(path.parent, path.name)
        except StorageError as exc:
            raise VaultError(f"cannot read the root key file: {exc}") from None
        if data is not None and len(data) != ROOT_BYTES:
            raise VaultError(f"{path}: is not a root key file (expected {ROOT_BYTES} bytes)")
        return data

    def write(self, slot: str, root: bytes) -> None:
        atomic_write(self._path(slot), root)

    def erase(self, slot: str) -> None:
        path = self._path(slot)
        try:
            fd = open_in(path.parent, path.name, os.O_WRONLY)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise VaultError(f"{path}: cannot destroy the root key file: {exc.strerror}") from None
        try:  # overwrite first: helps on disks, not on flash
            os.write(fd, bytes(ROOT_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        unlink_in(path.parent, path.name)
        with folder_fd(path.parent) as folder:
            os.fsync(folder)

    def scrub(self) -> None:
        """Destroy temporary copies of the key that a crash in the middle of a write left
        behind (".root.key.PID.tmp"): each would open old keystore copies forever."""
        for slot in SLOTS:
            destroy_temps(self.path.parent, self._path(slot).name)

    def why_missing(self) -> str:
        if self.data_dir is not None:
            refuse_if_moved_to_tpm(self.data_dir)
        raise VaultError(
            f"[vault] path = {str(self.path)!r}: there is no root key file there, although the data folder holds a "
            "keystore. First check that path (a typo, another config, a disk not mounted, a backup not restored): "
            "nothing was changed, and the data opens again once the key is found. Only if the key is truly gone can "
            "that data never be opened; then move the data folder aside to start afresh."
        )


NO_PERSISTENT_KEYRINGS = (
    '[vault] backend = "keyring", keyring = "persistent": this kernel has no persistent keyrings '
    "(CONFIG_PERSISTENT_KEYRINGS is off, as in Raspberry Pi OS kernels), and a session keyring would lose "
    'the root, and everything retained, whenever the service restarts. Use backend = "tpm" with a TPM HAT '
    '(scripts/install.sh --tpm): survives reboots, erasing is real; or backend = "file" with a path: survives '
    "reboots, but deletion is only logical on flash (README: guarantee levels)"
)


def _persistent_keyrings() -> bool:
    try:
        return keyring.persistent_supported()
    except KeyringError:
        return True  # some other refusal: the caller's own message says it


def refuse_if_moved_to_tpm(data_dir: Path) -> None:
    """A folder whose root `vault migrate` moved into a TPM must never look, to the vault it
    left, like a folder whose root is lost (the agent would start afresh)."""
    if exists_in(data_dir, TPM_MARKER):
        raise VaultError(
            f"{data_dir}: its root key was moved into a TPM ({data_dir / TPM_MARKER}; `edge-agent vault migrate`). "
            'Set [vault] backend = "tpm" in the config. If that migration was interrupted, run it again. '
            "Nothing was changed."
        )
