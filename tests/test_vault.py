"""Vaults (kernel keyring, file) and the keystore sealed under their root key."""

import json
import os
import shutil
import stat
from datetime import datetime, timedelta, timezone

import pytest

from edge.crypto import keyring
from edge.crypto.vault import FileVault, KeyringVault
from edge.errors import KeyringError, KeystoreError, VaultError
from edge.store.keystore import Access, Keystore
from edge.values import DataKind, KeyringKind

from support import keystore_rows

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def keyring_vault(tmp_path):
    return KeyringVault(tmp_path / "data", ring=KeyringKind.SESSION)


def test_keyring_round_trip_and_removal(tmp_path):
    vault = keyring_vault(tmp_path)
    assert vault.read("current") is None
    vault.write("current", b"\x01" * 32)
    assert vault.read("current") == b"\x01" * 32
    vault.write("current", b"\x02" * 32)  # replaced, not duplicated
    assert vault.read("current") == b"\x02" * 32
    vault.erase("current")
    assert vault.read("current") is None
    vault.erase("current")  # idempotent


def test_keyring_roots_are_per_data_folder(tmp_path):
    one, two = KeyringVault(tmp_path / "a", KeyringKind.SESSION), KeyringVault(tmp_path / "b", KeyringKind.SESSION)
    one.write("current", b"\x01" * 32)
    assert two.read("current") is None
    one.erase("current")


def test_keyring_key_is_visible_to_a_child_process_in_the_same_session(tmp_path):
    import subprocess
    import sys

    vault = keyring_vault(tmp_path)
    vault.write("current", b"\x07" * 32)
    code = (
        "from pathlib import Path; from edge.crypto.vault import KeyringVault;"
        f"print(KeyringVault(Path({str(tmp_path / 'data')!r}), 'session').read('current').hex())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "07" * 32
    vault.erase("current")


def test_file_vault_is_private(tmp_path):
    vault = FileVault(tmp_path / "keys" / "root.key")
    vault.write("current", b"\x03" * 32)
    assert stat.S_IMODE((tmp_path / "keys" / "root.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    vault.write("next", b"\x04" * 32)
    assert vault.read("next") == b"\x04" * 32 and (tmp_path / "keys" / "root.key.next").exists()
    vault.erase("next")
    assert vault.read("next") is None and not (tmp_path / "keys" / "root.key.next").exists()


def test_file_vault_rejects_a_wrong_file(tmp_path):
    (tmp_path / "root.key").write_bytes(b"short")
    with pytest.raises(VaultError, match="not a root key file"):
        FileVault(tmp_path / "root.key").read("current")


def test_levels_are_honest(tmp_path):
    assert keyring_vault(tmp_path).level.crypto_erase and not keyring_vault(tmp_path).level.survives_reboot
    file_level = FileVault(tmp_path / "k").level
    assert file_level.survives_reboot and not file_level.crypto_erase
    assert "logical" in file_level.to_json()["level"]


def _store_with_bucket(tmp_path, vault=None):
    store = Keystore(tmp_path / "data", vault or keyring_vault(tmp_path))
    with store.transaction() as data:
        bucket = store.new_bucket(data, "kid.audio.x", "kid", DataKind.AUDIO, NOW + timedelta(hours=1))
        store.new_bucket(data, "kid.audio.y", "kid", DataKind.AUDIO, NOW + timedelta(hours=2))
    return store, bucket


def test_keystore_is_sealed_and_private(tmp_path):
    store, bucket = _store_with_bucket(tmp_path)
    store.close()  # everything in the one file
    raw = store.path.read_bytes()
    assert raw.startswith(b"SQLite format 3\0") and sorted(os.listdir(store.data_dir)) == ["keystore.db", "lock", "reserve", "vault"]
    assert b"kid" not in raw and bucket.recipient.encode() not in raw and bucket.secret not in raw
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.data_dir.stat().st_mode) == 0o700
    reopened = Keystore(store.data_dir, store.vault)
    assert set(reopened.read().buckets) == {"kid.audio.x", "kid.audio.y"}
    store.vault.erase("current")


def test_ratchet_makes_an_old_keystore_copy_useless(tmp_path):
    store, bucket = _store_with_bucket(tmp_path)
    store.close()
    stale = tmp_path / "stale-keystore"
    shutil.copy(store.path, stale)
    with store.transaction() as data:
        store.destroy_buckets(data, ["kid.audio.x"])
    survivor = store.read().buckets["kid.audio.y"]
    assert store.identity(survivor).recipient.encode() == survivor.recipient  # live data still opens
    store.close()
    shutil.copy(stale, store.path)  # put the forensic copy back beside the current vault
    with pytest.raises(KeystoreError, match="cannot be opened"):
        Keystore(store.data_dir, store.vault).read()
    assert store.path.read_bytes() == stale.read_bytes()  # a failed open changes nothing
    store.vault.erase("current")


class Stop(Exception):
    """The process stops here (as a power cut would)."""


@pytest.mark.parametrize("crash_after", ["next staged", "keystore resealed", "current replaced"])
def test_interrupted_ratchet_recovers(tmp_path, crash_after, monkeypatch):
    store, _ = _store_with_bucket(tmp_path)
    vault = store.vault
    old = vault.read("current")
    real_write, real_erase = vault.write, vault.erase

    def write(slot, root):
        if slot == "current" and crash_after == "keystore resealed":
            raise Stop()
        real_write(slot, root)

    def erase(slot):
        if slot == "next" and crash_after == "current replaced":
            raise Stop()
        real_erase(slot)

    def crash_point(name):
        if name == "ratchet.staged" and crash_after == "next staged":
            raise Stop()

    monkeypatch.setattr(vault, "write", write)
    monkeypatch.setattr(vault, "erase", erase)
    monkeypatch.setattr("edge.store.keystore.crash_point", crash_point)
    with pytest.raises(Stop), store.transaction() as data:
        store.destroy_buckets(data, ["kid.audio.x"])
    new = vault.read("next")
    assert new is not None and new != old
    monkeypatch.undo()
    reopened = Keystore(store.data_dir, vault)
    expected = {"kid.audio.x", "kid.audio.y"} if crash_after == "next staged" else {"kid.audio.y"}
    assert set(reopened.read().buckets) == expected  # the commit happened or did not: never half
    assert vault.read("next") is None
    assert vault.read("current") == (old if crash_after == "next staged" else new)
    vault.erase("current")


def _reboot(data_dir):
    """What a power-off does: the kernel keyring is empty and the boot id is new."""
    marker = json.loads((data_dir / "vault").read_text())
    KeyringVault(data_dir, KeyringKind.SESSION).erase("current")
    (data_dir / "vault").write_text(json.dumps({**marker, "boot": "another-boot"}))


def test_root_lost_at_power_off_starts_afresh_only_at_the_agents_start(tmp_path):
    store, _ = _store_with_bucket(tmp_path)
    _reboot(store.data_dir)
    before = keystore_rows(store.data_dir)
    vault = KeyringVault(store.data_dir, KeyringKind.SESSION)
    reader = Keystore(store.data_dir, vault, access=Access.READ)
    assert reader.read().buckets == {} and "restarted" in (reader.root_lost or "")
    with pytest.raises(VaultError, match="restarted.*agent records the loss"):
        Keystore(store.data_dir, vault).read()  # purge, forget, export: say so, change nothing
    assert keystore_rows(store.data_dir) == before
    lost: list[str] = []
    agent = Keystore(store.data_dir, vault, on_root_lost=lost.append, access=Access.AGENT)
    assert agent.read().buckets == {} and agent.root_lost and len(lost) == 1
    assert keystore_rows(store.data_dir) != before
    vault.erase("current")


def test_root_lost_with_file_vault_is_an_error_not_a_wipe(tmp_path):
    vault = FileVault(tmp_path / "root.key")
    store, _ = _store_with_bucket(tmp_path, vault)
    before = keystore_rows(store.data_dir)
    (tmp_path / "root.key").unlink()
    with pytest.raises(VaultError, match=r"\[vault\] path = '.*root.key': there is no root key file there") as error:
        Keystore(store.data_dir, vault).read()
    assert "First check that path" in str(error.value) and "nothing was changed" in str(error.value)
    assert keystore_rows(store.data_dir) == before


def test_wrong_root_is_an_error_not_a_wipe(tmp_path):
    store, _ = _store_with_bucket(tmp_path)
    before = keystore_rows(store.data_dir)
    store.vault.write("current", b"\x05" * 32)
    with pytest.raises(KeystoreError, match="nothing was changed"):
        Keystore(store.data_dir, store.vault).read()
    assert keystore_rows(store.data_dir) == before
    store.vault.erase("current")


def test_syscall_errors_are_reported():
    with pytest.raises(KeyringError, match="refused"):
        keyring.read(123456789)


def test_the_key_folder_of_the_user_keeps_its_mode_and_a_warning_says_so(write_config, tmp_path):
    """edge never changes the mode of a folder it did not make (issue 18): it says what to do."""
    from support import edge_agent

    keys = tmp_path / "keys"
    keys.mkdir(mode=0o755)
    keys.chmod(0o755)
    config = write_config(vault=f'backend = "file"\npath = "{keys / "root.key"}"')
    ran = edge_agent("--config", str(config), "purge")
    assert ran.returncode == 0, ran.stderr
    assert stat.S_IMODE(keys.stat().st_mode) == 0o755 and stat.S_IMODE((keys / "root.key").stat().st_mode) == 0o600
    assert f"{keys} is mode 0755" in ran.stderr and f"chmod 700 {keys}" in ran.stderr


def test_a_kernel_without_persistent_keyrings_is_named_with_what_to_use_instead(write_config):
    """Raspberry Pi OS kernels lack CONFIG_PERSISTENT_KEYRINGS (issue 19): the default vault
    cannot work there, and doctor and every command say so and what to use instead."""
    import sys

    from support import ROOT, without_persistent_keyrings

    config = write_config(vault='backend = "keyring"\nkeyring = "persistent"')
    doctor = without_persistent_keyrings([sys.executable, "-m", "edge", "--config", str(config), "doctor", "--no-mic", "--json"], cwd=ROOT)
    finding = next(f for f in json.loads(doctor.stdout) if f["check"] == "vault")
    assert finding["status"] == "fail" and "this kernel has no persistent keyrings" in finding["detail"]
    assert 'backend = "tpm"' in finding["detail"] and 'backend = "file"' in finding["detail"]
    ran = without_persistent_keyrings([sys.executable, "-m", "edge", "--config", str(config), "purge"], cwd=ROOT)
    assert ran.returncode == 1 and "this kernel has no persistent keyrings" in ran.stderr
    assert keyring.persistent_supported()  # while this machine's own kernel has them


def test_a_missing_libkeyutils_says_what_to_install():
    """The keyring calls go through libkeyutils, built for this interpreter's ABI (issue 19:
    raw syscall numbers chosen by the kernel's machine name were wrong on 32-bit Pi OS)."""
    import ctypes
    import ctypes.util

    with pytest.raises(KeyringError, match=r"libkeyutils.so.1.*apt-get install libkeyutils1"):
        keyring.load_library(None)
    library = keyring.load_library(ctypes.util.find_library(keyring.LIBRARY))
    assert library.add_key.argtypes[-1] is ctypes.c_int32 and library.add_key.restype is ctypes.c_int32  # key_serial_t
