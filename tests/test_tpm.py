"""The TPM vault (issue 16) on a real software TPM (swtpm) through tpm2-pytss: the NV
index mapping, the guarantee level, reboot, the remnant test against a copy of the card,
the ratchet's crash points with the TPM killed, a TPM that disappears, and `vault migrate`."""

from __future__ import annotations

import json
import shutil
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.config import load_config
from edge.crypto.tpm import TpmVault
from edge.crypto.vault import KeyringVault
from edge.disk.layout import recording_path, transcript_path
from edge.errors import ConfigError, KeystoreError, VaultError
from edge.store.keystore import Keystore
from edge.values import KeyringKind
from edge.wiring import open_vault

from support import FakeWall, MicAgent, edge_agent, faketime, keystore_rows, openable, pcm_of, record, record_in_process, retention_parts

INDEX = 0x0100ED60


def tpm_vault(swtpm, data_dir: Path, index: int = INDEX) -> TpmVault:
    data_dir.mkdir(mode=0o700, exist_ok=True)
    return TpmVault(data_dir, swtpm.tcti, index)


def nv_indices(swtpm) -> list[int]:
    """What NV indices the TPM holds, read with tpm2-pytss directly."""
    from tpm2_pytss import ESAPI, TPM2_CAP, TPM2_HC

    with ESAPI(swtpm.tcti) as tpm:
        _more, data = tpm.get_capability(TPM2_CAP.HANDLES, TPM2_HC.NV_INDEX_FIRST, 64)
    return sorted(int(handle) for handle in data.data.handles)


def setup(tmp_path, write_config, swtpm):
    config = load_config(write_config(mode="always", vault=swtpm.vault_toml()))
    wall = FakeWall()
    clock, store, shredder = retention_parts(config, wall)
    return config, wall, clock, store, shredder


# -- the vault on the TPM ------------------------------------------------------------


def test_slots_map_onto_two_nv_indices_and_a_ratchet_swaps_them(tmp_path, swtpm):
    vault = tpm_vault(swtpm, tmp_path / "data")
    one, two, three = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    assert vault.read("current") is None and nv_indices(swtpm) == []
    vault.write("current", one)
    vault.write("next", two)
    assert nv_indices(swtpm) == [INDEX, INDEX + 1]
    assert (vault.read("current"), vault.read("next")) == (one, two)
    marker = tmp_path / "data" / "tpm-vault"
    assert json.loads(marker.read_text())["current"] == 0
    vault.write("current", two)  # the ratchet's commit: "next" holds it, so the slots swap in the marker
    assert json.loads(marker.read_text())["current"] == 1
    assert (vault.read("current"), vault.read("next")) == (two, one)
    vault.erase("next")  # the old root is overwritten in the chip
    assert vault.read("next") is None and raw_nv(swtpm, marker, INDEX) == bytes(32)
    assert raw_nv(swtpm, marker, INDEX + 1) == two and nv_indices(swtpm) == [INDEX, INDEX + 1]
    vault.write("current", three)  # not staged: written in place
    assert vault.read("current") == three and json.loads(marker.read_text())["current"] == 1
    vault.erase("next")  # idempotent
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600
    document = json.loads(marker.read_text())
    assert document["version"] == 2 and document["index"] == INDEX and len(bytes.fromhex(document["auth"])) == 32
    assert three not in marker.read_bytes()  # the marker holds the indices' authorization, never a root
    with pytest.raises(VaultError, match="not all zeros"):
        vault.write("next", bytes(32))  # would read back as empty


def test_a_vault_in_another_process_follows_a_swap_it_did_not_make(tmp_path, swtpm):
    """The agent's vault lives for days while a `purge` beside it ratchets: each operation
    reads the marker again, so the agent never reads the slot that was just erased."""
    agent, command = tpm_vault(swtpm, tmp_path / "data"), tpm_vault(swtpm, tmp_path / "data")
    agent.write("current", b"\x01" * 32)
    assert command.read("current") == b"\x01" * 32
    command.write("next", b"\x02" * 32)  # the command's ratchet: stage, swap, erase
    command.write("current", b"\x02" * 32)
    command.erase("next")
    assert (agent.read("current"), agent.read("next")) == (b"\x02" * 32, None)


def raw_nv(swtpm, marker: Path, index: int) -> bytes:
    """What an NV index holds, read with tpm2-pytss directly and the folder's authorization."""
    from tpm2_pytss import ESAPI

    with ESAPI(swtpm.tcti) as tpm:
        handle = tpm.tr_from_tpmpublic(index)
        tpm.tr_set_auth(handle, bytes.fromhex(json.loads(marker.read_text())["auth"]))
        return bytes(tpm.nv_read(handle, 32))


class CountedNv:
    """The TPM commands that write NV memory, counted on their way to the real TPM."""

    NAMES = ("nv_write", "nv_define_space", "nv_undefine_space")

    def __init__(self, monkeypatch) -> None:
        from tpm2_pytss import ESAPI

        self.calls: list[str] = []
        for name in self.NAMES:
            real = getattr(ESAPI, name)

            def counted(tpm, *args, _real=real, _name=name, **kwargs):
                self.calls.append(_name)
                return _real(tpm, *args, **kwargs)

            monkeypatch.setattr(ESAPI, name, counted)


def test_a_ratchet_costs_two_nv_writes_and_no_define(tmp_path, write_config, swtpm, monkeypatch):
    """NV memory wears out: a shred's ratchet writes the new root and overwrites the old one,
    nothing more (README: NV wear)."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config, swtpm)
    record_in_process(store, clock, config, "child")
    with store.transaction() as data:
        store.ratchet(data)  # the first ratchet defines the second index, once
    counted = CountedNv(monkeypatch)
    for _ in range(3):
        with store.transaction() as data:
            store.ratchet(data)
    assert counted.calls == ["nv_write", "nv_write"] * 3
    assert nv_indices(swtpm) == [INDEX, INDEX + 1]


def test_a_version_1_marker_still_opens_its_root_and_is_upgraded(tmp_path, write_config, swtpm):
    """Version 1 (edge before the slot swap) kept "current" at INDEX always."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config, swtpm)
    session = record_in_process(store, clock, config, "child")
    store.close()
    marker = config.device.data_dir / "tpm-vault"
    document = json.loads(marker.read_text())
    assert document["current"] == 0  # only ever written in place so far: INDEX, as version 1 had it
    del document["current"]
    marker.write_text(json.dumps({**document, "version": 1}))
    config, wall, clock, store, shredder = setup(tmp_path, write_config, swtpm)
    files = [recording_path(config.device.data_dir, session), transcript_path(config.device.data_dir, session)]
    assert openable(store, files) == [True, True]
    wall.advance(3600)
    assert [b.sessions for b in shredder.sweep().buckets] == [(session,)]
    assert json.loads(marker.read_text())["version"] == 2 and openable(store, files) == [False, True]
    marker.write_text(json.dumps({**document, "version": 2, "current": 2}))
    with pytest.raises(VaultError, match="is not an edge TPM vault marker"):
        tpm_vault(swtpm, config.device.data_dir)


def test_the_root_survives_a_tpm_power_cut(tmp_path, swtpm):
    vault = tpm_vault(swtpm, tmp_path / "data")
    vault.write("current", b"\x07" * 32)
    swtpm.restart()  # SIGKILL, then a start from the same NV state
    assert tpm_vault(swtpm, tmp_path / "data").read("current") == b"\x07" * 32


def test_another_data_folder_on_the_same_index_is_refused_and_nothing_is_destroyed(tmp_path, swtpm):
    mine = tpm_vault(swtpm, tmp_path / "mine")
    mine.write("current", b"\x01" * 32)
    theirs = tpm_vault(swtpm, tmp_path / "theirs")
    for attempt in (lambda: theirs.write("current", b"\x02" * 32), lambda: theirs.erase("current")):
        with pytest.raises(VaultError, match="in use by something other than this data folder|another data folder's root"):
            attempt()
    assert mine.read("current") == b"\x01" * 32
    assert not (tmp_path / "theirs" / "tpm-vault").exists()
    other = tpm_vault(swtpm, tmp_path / "theirs", INDEX + 2)  # another index is fine
    other.write("current", b"\x02" * 32)
    assert other.read("current") == b"\x02" * 32 and mine.read("current") == b"\x01" * 32


def test_an_index_of_another_shape_is_never_used(tmp_path, swtpm):
    from tpm2_pytss import ESAPI, TPM2_ALG, TPM2B_NV_PUBLIC, TPMA_NV, TPMS_NV_PUBLIC

    public = TPMS_NV_PUBLIC(nvIndex=INDEX, nameAlg=TPM2_ALG.SHA256, attributes=TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE, dataSize=64)
    with ESAPI(swtpm.tcti) as tpm:
        tpm.nv_define_space(b"", TPM2B_NV_PUBLIC(nvPublic=public))
    vault = tpm_vault(swtpm, tmp_path / "data")
    with pytest.raises(VaultError, match=r"NV index 0x0100ed60 is in use by something other.*choose another \[vault\] nv_index"):
        vault.write("current", b"\x01" * 32)
    assert nv_indices(swtpm) == [INDEX]


def test_a_config_naming_another_index_than_the_folders_is_an_error(tmp_path, swtpm):
    tpm_vault(swtpm, tmp_path / "data").write("current", b"\x01" * 32)
    with pytest.raises(VaultError, match=r"nv_index = 0x0100ed70, but the root .* is at NV index 0x0100ed60"):
        tpm_vault(swtpm, tmp_path / "data", 0x0100ED70)


def test_no_tpm_is_a_clear_error_that_says_how_to_enable_one(tmp_path, swtpm):
    swtpm.kill()
    with pytest.raises(VaultError, match=r"tcti = 'swtpm:.*no TPM answers there.*dtoverlay=tpm-slb9670.*Nothing was changed"):
        tpm_vault(swtpm, tmp_path / "data")


def test_level_is_reported_as_surviving_reboot_and_erase_real(tmp_path, write_config, swtpm):
    config = write_config(vault=swtpm.vault_toml())
    level = open_vault(load_config(config).vault, tmp_path / "data").level
    assert (level.backend, level.survives_reboot, level.crypto_erase) == ("tpm", True, True)
    status = edge_agent("--config", str(config), "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["vault"] == {**level.to_json(), "level": "crypto-erase"}
    assert "survives reboot" in edge_agent("--config", str(config), "status").stdout
    doctor = edge_agent("--config", str(config), "doctor", "--no-mic", "--json")
    vault_finding = next(f for f in json.loads(doctor.stdout) if f["check"] == "vault")
    assert vault_finding["status"] == "ok" and "survives reboots" in vault_finding["detail"]


def test_doctor_finds_a_missing_tpm_and_says_how_to_enable_it(tmp_path, write_config, swtpm):
    config = write_config(vault=swtpm.vault_toml())
    swtpm.kill()
    doctor = edge_agent("--config", str(config), "doctor", "--no-mic", "--json")
    vault_finding = next(f for f in json.loads(doctor.stdout) if f["check"] == "vault")
    assert vault_finding["status"] == "fail" and "no TPM answers" in vault_finding["detail"]
    assert "dtoverlay=tpm-slb9670" in vault_finding["detail"]


@pytest.mark.parametrize(
    ("vault", "message"),
    [
        ('backend = "tpm"\ntcti = "usb:/dev/tpm0"', "vault.tcti = 'usb:/dev/tpm0' is not allowed; use a TPM connection"),
        (
            'backend = "tpm"\nnv_index = 0x01C00002',
            "vault.nv_index = 29360130 is not allowed; use an NV index from 0x01000000 to 0x013ffffe",
        ),
        ('backend = "tpm"\nnv_index = "0x0100ED60"', "vault.nv_index = '0x0100ED60' is not allowed; use a whole number"),
        ('backend = "keyring"\ntcti = "device:/dev/tpmrm0"', 'tcti is only used when backend = "tpm"'),
        ('backend = "tpm"\npath = "root.key"', 'path is only used when backend = "file"'),
    ],
)
def test_tpm_settings_are_validated(write_config, vault, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(write_config(vault=vault))


# -- the keystore under a TPM root -----------------------------------------------------


def test_reboot_keeps_retained_sessions_and_they_expire_on_time(tmp_path, write_config, swtpm):
    config, wall, clock, store, shredder = setup(tmp_path, write_config, swtpm)
    session = record_in_process(store, clock, config, "child")  # audio 1h, transcript 7d
    data_dir = config.device.data_dir
    store.close()
    swtpm.restart()  # the device loses power: the TPM keeps its NV memory
    config, wall2, clock, store, shredder = setup(tmp_path, write_config, swtpm)
    files = [recording_path(data_dir, session), transcript_path(data_dir, session)]
    assert openable(store, files) == [True, True]  # retained sessions still open
    wall2.advance(3600)
    assert [(b.kind, b.sessions) for b in shredder.sweep().buckets] == [("audio", (session,))]  # on time
    assert openable(store, files) == [False, True]


def test_remnant_a_copy_of_the_card_opens_nothing_shredded(tmp_path, write_config, swtpm):
    """The attacker copies the SD card, not the TPM: after a shred, nothing shredded opens
    from the copy, old keystore included, while everything live still does."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config, swtpm)
    doomed = record_in_process(store, clock, config, "child")
    wall.advance(2 * 3600)
    live = record_in_process(store, clock, config, "child")
    data_dir = config.device.data_dir
    image = tmp_path / "card-image"
    shutil.copytree(data_dir, image)  # the whole card, marker with the index's authorization included
    wall.advance(3600 - 10 * 60)
    old_root = store.vault.read("current")
    assert [b.sessions for b in shredder.sweep().buckets] == [(doomed,)]
    nv_state = b"".join(p.read_bytes() for p in swtpm.state.iterdir() if p.is_file())
    assert old_root is not None and old_root not in nv_state and store.vault.read("current") in nv_state  # overwritten in the chip
    old = [recording_path(image, doomed), recording_path(image, live), transcript_path(image, doomed)]
    assert openable(store, old) == [False, True, True]
    store.close()
    shutil.rmtree(data_dir)
    shutil.copytree(image, data_dir)  # the old card beside the TPM's current state
    with pytest.raises(KeystoreError, match="cannot be opened"):
        Keystore(data_dir, tpm_vault(swtpm, data_dir)).read()


class Stop(Exception):
    """The process stops here."""


@pytest.mark.parametrize("crash_after", ["next staged", "keystore resealed", "current replaced"])
def test_a_power_cut_at_each_step_of_the_ratchet_leaves_one_usable_root(tmp_path, write_config, swtpm, crash_after, monkeypatch):
    """The TPM loses power with the process (SIGKILL) at each step; after the restart the
    keystore opens with exactly the root its last commit was sealed under."""
    config, wall, clock, store, shredder = setup(tmp_path, write_config, swtpm)
    session = record_in_process(store, clock, config, "child")
    vault = store.vault
    old = vault.read("current")
    real_write, real_erase = vault.write, vault.erase

    def power_cut():
        swtpm.kill()
        raise Stop()

    def crash_point(name):
        if name == "ratchet.staged" and crash_after == "next staged":  # before the commit
            power_cut()

    def write(slot, root):
        if slot == "current" and crash_after == "keystore resealed":  # after the commit
            power_cut()
        real_write(slot, root)

    def erase(slot):
        if slot == "next" and crash_after == "current replaced":
            power_cut()
        real_erase(slot)

    monkeypatch.setattr(vault, "write", write)
    monkeypatch.setattr(vault, "erase", erase)
    monkeypatch.setattr("edge.store.keystore.crash_point", crash_point)
    with pytest.raises(Stop), store.transaction() as data:
        store.destroy_buckets(data, [b for b in data.buckets if ".audio." in b])
    monkeypatch.undo()
    store.close()
    swtpm.start()
    vault = tpm_vault(swtpm, config.device.data_dir)
    reopened = Keystore(config.device.data_dir, vault).read()
    shredded = crash_after != "next staged"
    assert reopened.sessions[session].audio_expires is None if shredded else reopened.sessions[session].audio_expires
    assert vault.read("next") is None and nv_indices(swtpm) == [INDEX, INDEX + 1]
    assert (vault.read("current") == old) is not shredded


def test_a_tpm_that_disappears_mid_run_is_a_clear_error_and_loses_no_root(tmp_path, write_config, swtpm):
    config, wall, clock, store, shredder = setup(tmp_path, write_config, swtpm)
    session = record_in_process(store, clock, config, "child")
    before = keystore_rows(config.device.data_dir)
    swtpm.kill()
    wall.advance(3600)
    with pytest.raises(VaultError, match=r"no TPM answers there|the TPM \(swtpm:.*\) failed"):
        shredder.sweep()
    assert keystore_rows(config.device.data_dir) == before  # nothing committed under a root the TPM never got
    assert recording_path(config.device.data_dir, session).exists()  # still sealed, never opened or written out plain
    swtpm.start()
    assert [b.sessions for b in shredder.sweep().buckets] == [(session,)]  # once it is back, the shred happens


def test_end_to_end_the_real_agent_on_the_tpm_across_a_power_cut(tmp_path, write_config, swtpm, speech):
    """The real agent and model record on the TPM vault; the device loses power (agent and
    TPM); afterwards the audio still exports, and it is shredded when due."""
    config = write_config(mode="always", vault=swtpm.vault_toml())
    clip = speech.say("메시지")
    [session] = record(config, clip, profile="child")
    swtpm.restart()
    out = tmp_path / "back.wav"
    exported = edge_agent("--config", str(config), "export", "--session", session, "--out", str(out), "--purpose", "review")
    assert exported.returncode == 0, exported.stderr
    assert len(pcm_of(out)) > 16000 and pcm_of(out)[8000:-8000] in pcm_of(clip)  # the speech bit for bit (the edges: padding)
    later = faketime("+2h", "purge", config=config)  # the child's audio (1h) is due
    assert later.returncode == 0, later.stderr
    assert "audio" in later.stdout and not recording_path(tmp_path / "data", session).exists()
    verify = edge_agent("--config", str(config), "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


# -- vault migrate -------------------------------------------------------------------


def _recorded_on_keyring(tmp_path, write_config):
    config = load_config(write_config(mode="always"))
    clock, store, _shredder = retention_parts(config, FakeWall(datetime.now(timezone.utc)))  # now: `audit verify` checks expiries
    session = record_in_process(store, clock, config, "parent")
    store.close()
    return config, session


def test_migrate_moves_the_root_into_the_tpm_and_destroys_the_keyring_key(tmp_path, write_config, swtpm):
    config, session = _recorded_on_keyring(tmp_path, write_config)
    data_dir = config.device.data_dir
    keyring = KeyringVault(data_dir, KeyringKind.SESSION)
    assert keyring.read("current") is not None
    ran = edge_agent("--config", str(config.path), "vault", "migrate", "--to", "tpm", "--tcti", swtpm.tcti)
    assert ran.returncode == 0, ran.stderr
    assert "1 retained session(s) still open" in ran.stdout and 'backend = "tpm"' in ran.stdout
    assert keyring.read("current") is None and keyring.read("next") is None  # the old root is destroyed
    assert nv_indices(swtpm) == [INDEX + 1]  # staged there, then made current by swapping the slots
    # The config still says keyring: every command refuses, nothing is wiped.
    refused = edge_agent("--config", str(config.path), "purge")
    assert refused.returncode == 1 and "moved into a TPM" in refused.stderr and 'backend = "tpm"' in refused.stderr
    moved = write_config("moved.toml", vault=swtpm.vault_toml())
    status = edge_agent("--config", str(moved), "status", "--json")
    assert status.returncode == 0, status.stderr
    assert session in {s["session"] for s in json.loads(status.stdout)["sessions"]}
    clock, store, _ = retention_parts(load_config(moved), FakeWall())
    assert openable(store, [recording_path(data_dir, session), transcript_path(data_dir, session)]) == [True, True]
    verify = edge_agent("--config", str(moved), "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = tmp_path / "report.html"
    assert edge_agent("--config", str(moved), "audit", "report", "--html", str(report)).returncode == 0
    assert "the root key moved into the tpm vault" in report.read_text()
    events = [json.loads(line) for line in (data_dir / "audit.jsonl").read_text().splitlines()]
    migrated = [e for e in events if e["type"] == "vault.migrated"]
    assert [(e["fields"]["previous"], e["fields"]["backend"], e["fields"]["sessions"]) for e in migrated] == [("keyring", "tpm", 1)]


@pytest.mark.parametrize("point", ["ratchet.staged", "migrate.moved"])
def test_an_interrupted_migrate_loses_nothing_and_runs_again(tmp_path, write_config, swtpm, point):
    config, session = _recorded_on_keyring(tmp_path, write_config)
    args = ("--config", str(config.path), "vault", "migrate", "--to", "tpm", "--tcti", swtpm.tcti)
    crashed = edge_agent(*args, env={"EDGE_CRASH_AT": f"{point}:1"})
    assert crashed.returncode == -9, crashed.stderr
    again = edge_agent(*args)
    assert again.returncode == 0, again.stderr
    assert KeyringVault(config.device.data_dir, KeyringKind.SESSION).read("current") is None
    moved = load_config(write_config("moved.toml", vault=swtpm.vault_toml()))
    clock, store, _ = retention_parts(moved, FakeWall())
    data_dir = config.device.data_dir
    assert openable(store, [recording_path(data_dir, session), transcript_path(data_dir, session)]) == [True, True]


def test_migrate_without_a_tpm_changes_nothing(tmp_path, write_config, swtpm):
    config, _session = _recorded_on_keyring(tmp_path, write_config)
    before = keystore_rows(config.device.data_dir)
    swtpm.kill()
    ran = edge_agent("--config", str(config.path), "vault", "migrate", "--to", "tpm", "--tcti", swtpm.tcti)
    assert ran.returncode == 1 and "no TPM answers there" in ran.stderr
    assert keystore_rows(config.device.data_dir) == before
    assert KeyringVault(config.device.data_dir, KeyringKind.SESSION).read("current") is not None
    assert not (config.device.data_dir / "tpm-vault").exists()


def test_migrate_refuses_while_the_agent_runs(tmp_path, write_config, swtpm, virtual_mic):
    """The agent holds the keystore's root in memory: moving it underneath would leave the
    agent sealing under a root that is destroyed."""
    config = write_config(mode="push_to_talk")  # listening, recording nothing
    agent = MicAgent(virtual_mic, config)
    try:
        ran = edge_agent("--config", str(config), "vault", "migrate", "--to", "tpm", "--tcti", swtpm.tcti)
    finally:
        _sessions, log, code = agent.stop()
    assert code == 0, log
    assert ran.returncode == 1 and "the agent is running: stop it first" in ran.stderr
    assert nv_indices(swtpm) == [] and not (tmp_path / "data" / "tpm-vault").exists()
    assert KeyringVault(tmp_path / "data", KeyringKind.SESSION).read("current") is not None


def test_migrate_refuses_a_tcti_of_no_known_kind(tmp_path, write_config, swtpm):
    config, _session = _recorded_on_keyring(tmp_path, write_config)
    before = keystore_rows(config.device.data_dir)
    ran = edge_agent("--config", str(config.path), "vault", "migrate", "--to", "tpm", "--tcti", "tmp:/dev/tpm0")
    assert ran.returncode == 2 and "kinds: device, swtpm, mssim, tabrmd" in ran.stderr, ran.stderr
    assert keystore_rows(config.device.data_dir) == before and nv_indices(swtpm) == []
